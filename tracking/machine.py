"""Machine traffic: opens and clicks made by mail scanners and privacy proxies, not by people.

Three rules (DOMAIN.md §7), thresholds in settings:
- the user agent is a known scanner, proxy or automated client (tracking/data/machine_agents.csv,
  each entry with its source);
- the hit comes within TRACKING_MACHINE_DELAY_SECONDS of the delivery (SendingLog.event_at);
- TRACKING_BURST_LINKS or more links of one message clicked within TRACKING_BURST_SECONDS
  (judged in services, which sees the recent clicks).
Such hits are recorded with is_machine and a reason; KPIs count humans only.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.utils.translation import gettext as _

DATA_FILE = Path(__file__).resolve().parent / "data" / "machine_agents.csv"


@dataclass(frozen=True)
class AgentRule:
    match: str  # exact | contains | regex
    pattern: str
    category: str
    name: str
    source: str


def load_agent_rules(path: Path = DATA_FILE) -> list[AgentRule]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return [AgentRule(**{k: (v or "").strip() for k, v in row.items()}) for row in rows]


def _rule_regex(rule: AgentRule) -> str:
    if rule.match == "exact":
        return rf"\A{re.escape(rule.pattern)}\Z"
    if rule.match == "contains":
        return re.escape(rule.pattern)
    if rule.match == "regex":
        re.compile(rule.pattern)  # a broken entry fails loudly at load time
        return rule.pattern
    raise ValueError(f"{DATA_FILE.name}: unknown match kind {rule.match!r} for {rule.name!r}")


@lru_cache(maxsize=1)
def _matcher() -> tuple[re.Pattern, list[AgentRule]]:
    """One alternation with a named group per rule: one regex search per hit."""
    rules = load_agent_rules()
    combined = "|".join(f"(?P<r{i}>{_rule_regex(rule)})" for i, rule in enumerate(rules))
    return re.compile(combined, re.IGNORECASE), rules


def agent_rule(user_agent: str) -> AgentRule | None:
    regex, rules = _matcher()
    m = regex.search(user_agent.strip())
    return rules[int(m.lastgroup[1:])] if m else None


def agent_reason(user_agent: str) -> str:
    """Why the user agent is a machine's ("" when it is not known as one)."""
    rule = agent_rule(user_agent)
    return _("Known %(category)s: %(name)s") % {"category": rule.category, "name": rule.name} if rule else ""


def timing_reason() -> str:
    return _("Within %(seconds)s s of delivery") % {"seconds": f"{settings.TRACKING_MACHINE_DELAY_SECONDS:g}"}


def machine_reason(*, user_agent: str, at: datetime, delivered_at: datetime | None) -> str:
    """Why a hit looks made by a machine (by its user agent or its timing); "" for a person."""
    reason = agent_reason(user_agent)
    if reason:
        return reason
    if delivered_at is not None and at - delivered_at < timedelta(seconds=settings.TRACKING_MACHINE_DELAY_SECONDS):
        return timing_reason()
    return ""


def burst_reason() -> str:
    return _("%(links)d links clicked within %(seconds)s s") % {
        "links": settings.TRACKING_BURST_LINKS,
        "seconds": f"{settings.TRACKING_BURST_SECONDS:g}",
    }
