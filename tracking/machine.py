"""Machine traffic: opens and clicks made by mail scanners and privacy proxies, not by people.

Three rules (DOMAIN.md §7), thresholds in settings:
- the user agent is a known scanner, proxy or automated client (tracking/data/machine_agents.csv,
  each entry with its source);
- the hit comes within TRACKING_MACHINE_DELAY_SECONDS of the delivery (SendingLog.event_at);
- TRACKING_BURST_LINKS or more links of one message clicked within TRACKING_BURST_SECONDS
  (judged by the writers, which see the recent clicks).
Such hits are recorded with is_machine and a reason; KPIs count humans only.

The rule is written once here, twice over: in Python (`machine_reason`, for the portable writer
and provider events) and as the SQL expression every PostgreSQL statement embeds (`reason_sql`
with `rule_params`): the same order (user agent, then timing, then burst), the same thresholds,
the same reasons. A hit on a log still being sent (its outcome not written yet) is as early as
can be: it counts as delivered at the hit's own time.
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

from deliveries.models import SendingStatus

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


def machine_reason(*, user_agent: str, at: datetime, delivered_at: datetime | None, status: str = "", burst: bool = False) -> str:
    """Why a hit looks made by a machine (its user agent, its timing, a burst of clicks); "" for a
    person. `delivered_at`: the sending log's event time; `status`: its status (a log still being
    sent has no event time yet: the hit counts as within the delay)."""
    reason = agent_reason(user_agent)
    if reason:
        return reason
    if delivered_at is None and status == SendingStatus.SENDING:
        delivered_at = at
    if delivered_at is not None and at - delivered_at < timedelta(seconds=settings.TRACKING_MACHINE_DELAY_SECONDS):
        return timing_reason()
    if burst:
        return burst_reason()
    return ""


def reason_sql(*, agent: str, event_at: str, status: str, at: str, burst: str = "") -> str:
    """`machine_reason` as a PostgreSQL expression over the SQL expressions given (the agent's
    reason worked out in Python, the log's event time and status, the hit's time, and a boolean
    saying the click is part of a burst), with the parameters of `rule_params()`."""
    burst_when = f" WHEN {burst} THEN %(burst_reason)s" if burst else ""
    return (
        f"CASE WHEN {agent} <> '' THEN {agent}"
        f" WHEN ({event_at} IS NULL AND {status} = %(sending)s) OR {event_at} > {at} - %(machine_delay)s THEN %(timing_reason)s"
        f"{burst_when} ELSE '' END"
    )


def rule_params() -> dict:
    """The parameters `reason_sql` refers to."""
    return {
        "sending": SendingStatus.SENDING,
        "machine_delay": timedelta(seconds=settings.TRACKING_MACHINE_DELAY_SECONDS),
        "timing_reason": timing_reason(),
        "burst_reason": burst_reason(),
    }


def burst_reason() -> str:
    return _("%(links)d links clicked within %(seconds)s s") % {
        "links": settings.TRACKING_BURST_LINKS,
        "seconds": f"{settings.TRACKING_BURST_SECONDS:g}",
    }
