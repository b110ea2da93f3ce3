"""Streamed CSV exports of the Deployment window's tabs.

Rows come from `values_list(...).iterator(chunk_size=…)` (a server-side cursor on PostgreSQL), are
written a thousand lines at a time, and never held all at once: a million rows export in flat memory.
"""

from datetime import datetime

from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.csvfiles import stream_csv
from deliveries.models import (
    Delivery,
    ExclusionCause,
    FailureReason,
    FailureType,
    JournalEntry,
    SendingStatus,
    TrackedUrl,
)
from tracking.models import TrackingLog

from . import selectors

CHUNK = 2000


def _text(value: str | None) -> str:
    """A free-text cell (every cell is neutralized again by stream_csv: accounts/csvfiles.py)."""
    return value or ""


def _when(value: datetime | None) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _labels(choices) -> dict[str, str]:
    return {value: str(label) for value, label in choices.choices}


def _journal(delivery: Delivery, filters: dict):
    levels = _labels(JournalEntry.Level)
    header = [_("Date"), _("Level"), _("Message"), _("User")]
    qs = selectors.journal_list(delivery=delivery).values_list("at", "level", "text", "user__username")
    rows = (
        [_when(at), levels.get(level, level), _text(text), user or ""] for at, level, text, user in qs.iterator(CHUNK)
    )
    return header, rows


def _sending(delivery: Delivery, filters: dict):
    statuses, types, reasons = _labels(SendingStatus), _labels(FailureType), _labels(FailureReason)
    header = [_("Date"), _("Status"), _("Address"), _("Nature of failure"), _("Reason"), _("Details"), _("Attempts")]
    qs = selectors.sending_log_list(
        delivery=delivery, status=filters.get("status", ""), reason=filters.get("reason", "")
    ).values_list("event_at", "status", "address", "failure_type", "failure_reason", "failure_text", "attempts")
    rows = (
        [_when(at), statuses.get(st, st), _text(addr), types.get(ft, ft), reasons.get(fr, fr), _text(text), attempts]
        for at, st, addr, ft, fr, text, attempts in qs.iterator(CHUNK)
    )
    return header, rows


def _exclusions(delivery: Delivery, filters: dict):
    causes = _labels(ExclusionCause)
    header = [_("Address"), _("Profile"), _("Cause"), _("Found at send time")]
    qs = selectors.exclusion_log_list(delivery=delivery, cause=filters.get("cause", "")).values_list(
        "address", "profile_id", "cause", "found_at"
    )
    rows = (
        [_text(addr), profile or "", causes.get(cause, cause), found.isoformat() if found else ""]
        for addr, profile, cause, found in qs.iterator(CHUNK)
    )
    return header, rows


def _causes(delivery: Delivery, filters: dict):
    causes = _labels(ExclusionCause)
    header = [_("Cause"), _("Volume")]
    rows = (
        [causes.get(r["cause"], r["cause"]), r["count"]] for r in selectors.exclusion_cause_counts(delivery=delivery)
    )
    return header, rows


def _tracking(delivery: Delivery, filters: dict):
    kinds = _labels(TrackingLog.Kind)
    header = [_("Date"), _("Recipient"), _("Type"), _("URL label"), _("URL"), _("Machine"), _("Machine reason")]
    qs = selectors.tracking_log_list(
        delivery=delivery, kind=filters.get("kind", ""), origin=filters.get("origin", "")
    ).values_list(
        "at", "sending_log__address", "kind", "tracked_url__label", "tracked_url__url", "is_machine", "machine_reason"
    )
    rows = (
        [
            _when(at),
            _text(addr),
            kinds.get(kind, kind),
            _text(label),
            _text(url),
            _("yes") if machine else _("no"),
            _text(why),
        ]
        for at, addr, kind, label, url, machine, why in qs.iterator(CHUNK)
    )
    return header, rows


def _urls(delivery: Delivery, filters: dict):
    kinds = _labels(TrackedUrl.Kind)
    header = [_("Label"), _("Type"), _("Source URL"), _("Clicks"), _("Machine clicks")]
    qs = selectors.tracked_url_list(delivery=delivery).values_list("label", "kind", "url", "clicks", "machine_clicks")
    rows = (
        [_text(label), kinds.get(kind, kind), _text(url), clicks, machine] for label, kind, url, clicks, machine in qs
    )
    return header, rows


EXPORTS = {
    "log": _journal,
    "sending": _sending,
    "exclusions": _exclusions,
    "causes": _causes,
    "tracking": _tracking,
    "urls": _urls,
}
FILE_NAMES = {
    "log": "journal",
    "sending": "sending-logs",
    "exclusions": "exclusion-logs",
    "causes": "exclusion-causes",
    "tracking": "tracking-logs",
    "urls": "tracked-urls",
}


def export_tab(*, delivery: Delivery, tab: str, filters: dict) -> StreamingHttpResponse:
    header, rows = EXPORTS[tab](delivery, filters)
    return stream_csv(filename=f"{delivery.human_id}-{FILE_NAMES[tab]}.csv", header=header, rows=rows)
