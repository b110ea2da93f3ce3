"""A send per recipient's time ("Optimize the sending time per recipient", DOMAIN.md §1.9).

Preparation gives each sending log its own due time (`due_at`), in one statement on PostgreSQL:
- *at the recipient's time zone*: the contact date's wall-clock time (9:00) read in each profile's
  time zone (the message's own for a profile without one, or with a name the time zone database
  does not know);
- *at a date from a profile attribute*: the attribute's date (00:00 in the message's time zone) or
  date and time, plus an offset in hours; a row whose attribute is empty or not a date is excluded
  ("Send date empty or not a date").
The engine claims a row only once it is due; waves are the rows due in the same hour. SQLite (the
embedded default) computes the times in Python (DECISIONS #11).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import connection, transaction
from django.db.models import Count, Max, Min
from django.db.models.functions import TruncHour

from audiences.models import Profile

from .models import Delivery, ExclusionCause, ExclusionLog, SendingLog, SendingStatus, SendTime


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


def message_zone(delivery) -> ZoneInfo:
    return _zone(delivery.schedule_tz or "UTC") or ZoneInfo("UTC")


def contact_wall_time(delivery) -> datetime | None:
    """The contact date as a wall-clock time in the message's time zone (naive), or None."""
    if delivery.scheduled_at is None:
        return None
    return delivery.scheduled_at.astimezone(message_zone(delivery)).replace(tzinfo=None)


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?$")


def attribute_time(value, zone: ZoneInfo) -> datetime | None:
    """A profile attribute read as a send time (the same rule as the SQL function
    dispatch_try_timestamptz): a date, a date and time, or one with its own offset."""
    text = str(value).strip() if value is not None else ""
    try:
        if _DATE.match(text):
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=zone)
        if _DATETIME.match(text):
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)
    except ValueError:  # 2026-02-30
        return None
    return None


def due_times_compute(*, delivery) -> int:
    """Set every sending log's due time for a message that optimizes its sending time; exclude the
    rows whose attribute gives no date. Returns how many were excluded. Sets first/last due times."""
    if delivery.send_time == SendTime.NONE:
        Delivery.objects.filter(pk=delivery.pk).update(first_due_at=None, last_due_at=None)
        return 0
    if connection.vendor == "postgresql":
        excluded = _compute_postgresql(delivery)
    else:
        excluded = _compute_portable(delivery)
    span = SendingLog.objects.filter(delivery_id=delivery.pk).aggregate(first=Min("due_at"), last=Max("due_at"))
    Delivery.objects.filter(pk=delivery.pk).update(first_due_at=span["first"], last_due_at=span["last"])
    return excluded


def _compute_postgresql(delivery) -> int:
    logs, profiles = SendingLog._meta.db_table, Profile._meta.db_table
    tz = delivery.schedule_tz or "UTC"
    with transaction.atomic(), connection.cursor() as cursor:
        if delivery.send_time == SendTime.RECIPIENT_TZ:
            # One statement: each profile's zone if the time zone database knows it (the names
            # read once), else the message's; the wall-clock time read in that zone.
            cursor.execute(
                f"""WITH zones AS MATERIALIZED (SELECT name FROM pg_timezone_names)
                UPDATE {logs} s SET due_at = %s::timestamp AT TIME ZONE COALESCE(z.name, %s)
                FROM {profiles} p LEFT JOIN zones z ON z.name = p.time_zone
                WHERE s.delivery_id = %s AND p.id = s.profile_id""",
                [contact_wall_time(delivery), tz, delivery.pk],
            )
            return 0
        cursor.execute(
            f"""UPDATE {logs} s SET due_at = dispatch_try_timestamptz(p.attributes ->> %s, %s) + make_interval(hours => %s)
            FROM {profiles} p WHERE s.delivery_id = %s AND p.id = s.profile_id""",
            [delivery.send_time_attribute, tz, delivery.send_time_offset_hours, delivery.pk],
        )
        return _exclude_without_date(delivery)


def _compute_portable(delivery) -> int:
    zone = message_zone(delivery)
    wall = contact_wall_time(delivery)
    offset = timedelta(hours=delivery.send_time_offset_hours)
    rows = SendingLog.objects.filter(delivery_id=delivery.pk).values_list("id", "profile__time_zone", "profile__attributes")
    batch: list[SendingLog] = []
    with transaction.atomic():
        for log_id, profile_zone, attributes in rows.iterator(chunk_size=2000):
            if delivery.send_time == SendTime.RECIPIENT_TZ:
                due = wall.replace(tzinfo=_zone(profile_zone or "") or zone)
            else:
                found = attribute_time((attributes or {}).get(delivery.send_time_attribute), zone)
                due = found + offset if found else None
            batch.append(SendingLog(id=log_id, due_at=due))
            if len(batch) >= 2000:
                SendingLog.objects.bulk_update(batch, ["due_at"])
                batch.clear()
        SendingLog.objects.bulk_update(batch, ["due_at"])
        if delivery.send_time == SendTime.ATTRIBUTE:
            return _exclude_without_date(delivery)
    return 0


def _exclude_without_date(delivery) -> int:
    """Rows whose attribute gave no send time leave the send: an exclusion log each."""
    missing = SendingLog.objects.filter(delivery_id=delivery.pk, due_at__isnull=True)
    ExclusionLog.objects.bulk_create(
        [ExclusionLog(delivery_id=delivery.pk, profile_id=profile_id, address=address, cause=ExclusionCause.SEND_DATE_MISSING)
         for profile_id, address in missing.values_list("profile_id", "address").iterator(chunk_size=5000)],  # fmt: skip
        batch_size=5000,
    )
    return missing.delete()[0]


# --- reads ----------------------------------------------------------------------------------------
def wave_plan(*, delivery, now) -> dict:
    """The plan of a send per recipient's time: recipients per due hour, how many waves are due,
    the next wave, how many recipients' time had already passed. One GROUP BY."""
    if delivery.send_time == SendTime.NONE:
        return {}
    rows = list(
        SendingLog.objects.filter(delivery_id=delivery.pk, due_at__isnull=False)
        .exclude(status=SendingStatus.SKIPPED)
        .annotate(hour=TruncHour("due_at"))
        .values("hour")
        .annotate(n=Count("id"), first=Min("due_at"))
        .order_by("hour")
    )
    due = [r for r in rows if r["first"] <= now]
    upcoming = [r for r in rows if r["first"] > now]
    return {
        "waves": [{"hour": r["hour"], "count": r["n"]} for r in rows],
        "total": len(rows),
        "due": len(due),
        "percent": len(due) * 100 // len(rows) if rows else 0,
        "next": {"at": upcoming[0]["first"], "count": upcoming[0]["n"]} if upcoming else None,
        "first": rows[0]["first"] if rows else None,
        "last": delivery.last_due_at,
    }


def passed_before(*, delivery, at) -> int:
    """Recipients whose own send time is already past at `at` (they receive it at once)."""
    return SendingLog.objects.filter(delivery_id=delivery.pk, status=SendingStatus.PENDING, due_at__lt=at).count()


def waiting_for_their_time(*, delivery_id: int, now) -> bool:
    """Rows never tried that wait for their own send time (a wave to come), not for a retry."""
    return SendingLog.objects.filter(
        delivery_id=delivery_id, status=SendingStatus.PENDING, attempts=0, due_at__gt=now
    ).exists()


