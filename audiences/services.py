"""Writes of the audiences app: profiles, audiences, quarantine rules (DOMAIN.md §5), imports."""

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Case, F, PositiveIntegerField, Value, When
from django.utils import timezone

from .models import Channel, Quarantine

logger = logging.getLogger(__name__)

S = Quarantine.Status

SOFT_ERRORS_TO_QUARANTINE = 5
CLEANUP_DAYS = 10
CLEANUP_DAYS_MAILBOX_FULL = 30
MAILBOX_FULL = "mailbox_full"  # deliveries.FailureReason.MAILBOX_FULL (audiences cannot import deliveries)

# Statuses an error never changes: the operator decided (allowlist) or the address is already out.
_STICKY = {S.ALLOWLIST}


# --- quarantine rules (DOMAIN.md §5) --------------------------------------------------------


def _apply_failure(row: Quarantine, *, failure_type: str, reason: str, text: str, at: datetime) -> bool:
    """Apply one failure to `row` in memory; True when something changed."""
    if row.status in _STICKY:
        return False
    if failure_type == "complaint":
        row.status = S.DENYLIST
    elif failure_type == "hard":
        row.error_count += 1
        if row.status != S.DENYLIST:
            row.status = S.QUARANTINE
    elif failure_type == "soft":
        same_day = row.last_error_at is not None and timezone.localdate(row.last_error_at) == timezone.localdate(at)
        if same_day and row.error_count > 0:
            # A soft error counts once per day at most: keep the count, refresh the facts only.
            if at > row.last_error_at:
                row.last_error_at, row.reason, row.text = at, reason or row.reason, text or row.text
            return True
        row.error_count += 1
        if row.status not in (S.QUARANTINE, S.DENYLIST):
            row.status = S.QUARANTINE if row.error_count >= SOFT_ERRORS_TO_QUARANTINE else S.ERRONEOUS
    else:
        return False
    if row.last_error_at is None or at >= row.last_error_at:
        row.last_error_at = at
        row.reason = (reason or "")[:64]
        row.text = text or ""
    return True


def quarantine_record_failures(*, failures: list[dict]) -> int:
    """Record delivery failures in quarantine, a batch at a time (a constant number of queries).

    Each item: `address, channel, failure_type ("hard"|"soft"|"ignored"|"complaint"), reason
    (a deliveries FailureReason value), text, at`. Rows are created as needed, locked in id order,
    updated in memory in time order, then written with one statement. Returns the rows changed.
    """
    items = []
    for f in failures:
        ftype = f.get("failure_type") or ""
        address = (f.get("address") or "").strip().lower()
        if ftype not in ("hard", "soft", "complaint") or not address:
            continue
        items.append({**f, "address": address, "channel": f.get("channel") or Channel.EMAIL})
    if not items:
        return 0
    items.sort(key=lambda f: f["at"])
    keys = {(f["address"], f["channel"]) for f in items}
    with transaction.atomic():
        Quarantine.objects.bulk_create(
            [Quarantine(address=a, channel=c, status=S.UNKNOWN) for a, c in sorted(keys)], ignore_conflicts=True
        )
        addresses = {a for a, _c in keys}
        channels = {c for _a, c in keys}
        rows = {
            (r.address, r.channel): r
            for r in Quarantine.objects.select_for_update()
            .filter(address__in=addresses, channel__in=channels)
            .order_by("id")
        }
        changed = {}
        for f in items:
            row = rows.get((f["address"], f["channel"]))
            if row is None:
                continue
            if _apply_failure(row, failure_type=f["failure_type"], reason=f.get("reason", ""), text=f.get("text", ""), at=f["at"]):
                changed[row.pk] = row
        now = timezone.now()
        for row in changed.values():
            row.updated_at = now
        Quarantine.objects.bulk_update(
            list(changed.values()), ["status", "error_count", "last_error_at", "reason", "text", "updated_at"]
        )
    return len(changed)


def quarantine_record_failure(*, address: str, channel: str, failure_type: str, reason: str = "", text: str = "", at=None) -> None:
    """One failure (DOMAIN.md §5): hard -> Quarantine at once; soft counted once a day at most,
    status Erroneous, the 5th -> Quarantine; complaint -> On denylist; ignored -> nothing."""
    quarantine_record_failures(
        failures=[
            {
                "address": address,
                "channel": channel,
                "failure_type": failure_type,
                "reason": reason,
                "text": text,
                "at": at or timezone.now(),
            }
        ]
    )


def quarantine_record_successes(*, addresses: list[str], channel: str = Channel.EMAIL, at=None) -> int:
    """Record successful deliveries: the last delivery time of known addresses is set, and an
    Erroneous address returns to Valid (its error count reset). One statement; addresses without
    a quarantine row get none. Returns the rows touched."""
    keys = {(a or "").strip().lower() for a in addresses} - {""}
    if not keys:
        return 0
    at = at or timezone.now()
    return Quarantine.objects.filter(channel=channel, address__in=keys).update(
        last_delivery_at=at,
        status=Case(When(status=S.ERRONEOUS, then=Value(S.VALID)), default=F("status")),
        error_count=Case(
            When(status=S.ERRONEOUS, then=Value(0)), default=F("error_count"), output_field=PositiveIntegerField()
        ),
        updated_at=timezone.now(),
    )


def quarantine_record_success(*, address: str, channel: str = Channel.EMAIL, at=None) -> None:
    quarantine_record_successes(addresses=[address], channel=channel, at=at)


def quarantine_cleanup(*, now=None) -> int:
    """The daily cleanup: Erroneous -> Valid after 10 days without error (30 when the last error
    was Mailbox full). Quarantine and On denylist are never lifted automatically. Returns the count."""
    now = now or timezone.now()
    base = Quarantine.objects.filter(status=S.ERRONEOUS)
    stale = base.filter(last_error_at__lte=now - timedelta(days=CLEANUP_DAYS)).exclude(reason=MAILBOX_FULL) | base.filter(
        reason=MAILBOX_FULL, last_error_at__lte=now - timedelta(days=CLEANUP_DAYS_MAILBOX_FULL)
    )
    count = stale.update(status=S.VALID, error_count=0, updated_at=now)
    if count:
        logger.info("quarantine cleanup: %d erroneous address(es) back to valid", count)
    return count
