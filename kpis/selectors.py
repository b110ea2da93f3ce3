"""Reads for the Deployment block, the Deployment window and the API."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Max, Min, Q, QuerySet
from django.db.models.functions import Trunc
from django.utils import timezone
from django.utils.translation import gettext

from deliveries import selectors as deliveries_selectors
from deliveries.models import (
    FINAL_STATES,
    SENDING_STATES,
    STARTED_STATES,
    Delivery,
    ExclusionLog,
    SendingLog,
    State,
    TrackedUrl,
)
from tracking.models import TrackingLog

from .models import KpiSnapshot

RATE_WINDOW = timedelta(minutes=1)
MIN_RATE_WINDOW = timedelta(seconds=5)


def delivery_get(*, pk: int, user) -> Delivery:
    """The message with its snapshot (one query), through deliveries' one permission-checked
    fetch (PermissionDenied without a role, its 404 sentence when there is none)."""
    return deliveries_selectors.delivery_get(pk=pk, user=user, queryset=Delivery.objects.select_related("kpis", "confirmed_by"))


def snapshot_of(delivery: Delivery) -> KpiSnapshot | None:
    """The delivery's snapshot, or None (no query when it was fetched with select_related("kpis"))."""
    try:
        return delivery.kpis
    except KpiSnapshot.DoesNotExist:
        return None


def snapshots_of(deliveries) -> dict[int, KpiSnapshot]:
    """The snapshots of many messages (a page of a list), by message id, in one query."""
    ids = [getattr(d, "pk", d) for d in deliveries]
    return {s.delivery_id: s for s in KpiSnapshot.objects.filter(delivery_id__in=ids)} if ids else {}


def snapshot_covers_end(delivery: Delivery, snapshot: KpiSnapshot | None) -> bool:
    """True when the snapshot's figures were read from the logs after the send ended (there is
    nothing left to bring up to date)."""
    if snapshot is None or snapshot.computed_at is None:
        return False
    ended = delivery.finished_at or delivery.updated_at
    return ended is None or snapshot.computed_at >= ended


TRACKING_FIELDS = ("unique_opens", "unique_clicks", "opt_outs", "mirror_pages")


def tiles_snapshot(delivery: Delivery, snapshot: KpiSnapshot | None) -> KpiSnapshot | None:
    """What the KPI tiles show: the stored snapshot, except for a send that ended after it was
    computed (or before it ever was). Until the recompute that follows the end lands, the sending
    figures come from the send's own counters (kept by the sender with every chunk, and by Stop),
    so the tiles neither drop to 0 (an empty snapshot, just after Stop) nor show the figures of
    before the end; opens and clicks stay those of the last snapshot. Not saved."""
    if delivery.state not in FINAL_STATES or snapshot_covers_end(delivery, snapshot):
        return snapshot
    live = KpiSnapshot(
        delivery_id=delivery.pk,
        to_deliver=delivery.to_deliver_count,
        skipped=delivery.skipped_count,
        delivered=delivery.sent_count,
        bounces=delivery.failed_count,
        computed_at=snapshot.computed_at if snapshot else None,
        duration_ms=snapshot.duration_ms if snapshot else 0,
    )
    if snapshot is not None and snapshot.computed_at is not None:
        for name in TRACKING_FIELDS:
            setattr(live, name, getattr(snapshot, name))
    return live


def snapshot_is_computing(snapshot: KpiSnapshot | None, *, now: datetime | None = None) -> bool:
    if snapshot is None or snapshot.computing_since is None:
        return False
    now = now or timezone.now()
    return snapshot.computing_since >= now - timedelta(seconds=settings.KPI_COMPUTE_LOCK_TIMEOUT)


@dataclass(frozen=True)
class Progress:
    state: str
    processed: int
    to_deliver: int
    sent: int
    failed: int
    rate_per_minute: int  # messages that reached a final status during the last minute
    eta: datetime | None  # when the first pass should end at the current rate

    @property
    def percent(self) -> int:
        if not self.to_deliver:
            return 100 if self.state in FINAL_STATES else 0
        return min(100, self.processed * 100 // self.to_deliver)

    @property
    def remaining(self) -> int:
        return max(self.to_deliver - self.processed, 0)

    @property
    def is_sending(self) -> bool:
        return self.state in SENDING_STATES

    @property
    def eta_seconds(self) -> int | None:
        if self.eta is None:
            return None
        return max(0, round((self.eta - timezone.now()).total_seconds()))

    @property
    def eta_left_display(self) -> str:
        """'less than a minute left', 'about 12 min left', 'about 2 h 05 min left'."""
        seconds = self.eta_seconds
        if seconds is None:
            return ""
        if seconds < 60:
            return gettext("less than a minute left")
        minutes = round(seconds / 60)
        if minutes < 60:
            return gettext("about %(m)d min left") % {"m": minutes}
        return gettext("about %(h)d h %(m)02d min left") % {"h": minutes // 60, "m": minutes % 60}


def delivery_progress(*, delivery: Delivery, now: datetime | None = None) -> Progress:
    """Processed / to deliver from the delivery's counters (kept by the sender), the rate over the
    last minute (an index-only count on (delivery, event_at): the sender sets `event_at` when a log
    becomes final) and the ETA at that rate. During a send's first minute the rate is taken over the
    time elapsed since it started, so it is not underestimated."""
    now = now or timezone.now()
    rate = 0
    if delivery.state in SENDING_STATES:
        window = RATE_WINDOW
        if delivery.started_at and now - delivery.started_at < RATE_WINDOW:
            window = max(now - delivery.started_at, MIN_RATE_WINDOW)
        recent = SendingLog.objects.filter(delivery_id=delivery.pk, event_at__gt=now - window).count()
        rate = round(recent * RATE_WINDOW / window)
    remaining = max(delivery.to_deliver_count - delivery.processed_count, 0)
    eta = None
    if delivery.state in (State.IN_PROGRESS, State.RETRY_IN_PROGRESS) and rate and remaining:
        eta = now + timedelta(minutes=remaining / rate)
    return Progress(
        state=delivery.state,
        processed=delivery.processed_count,
        to_deliver=delivery.to_deliver_count,
        sent=delivery.sent_count,
        failed=delivery.failed_count,
        rate_per_minute=rate,
        eta=eta,
    )


def delivery_is_started(delivery: Delivery) -> bool:
    return delivery.state in STARTED_STATES


# --- Deployment window tabs -------------------------------------------------------------
# The Log, Sending logs and Exclusion logs tabs list what deliveries owns: through its selectors.
def journal_list(*, delivery: Delivery) -> QuerySet:
    return deliveries_selectors.journal_list(delivery=delivery, limit=None)


def sending_log_list(*, delivery: Delivery, status: str = "", reason: str = "") -> QuerySet:
    return deliveries_selectors.sending_logs(delivery=delivery, status=status, reason=reason)


def exclusion_log_list(*, delivery: Delivery, cause: str = "") -> QuerySet:
    return deliveries_selectors.exclusion_logs(delivery=delivery, cause=cause)


def exclusion_cause_counts(*, delivery: Delivery) -> QuerySet:
    """Volume per exclusion cause, largest first (one GROUP BY)."""
    return (
        ExclusionLog.objects.filter(delivery=delivery)
        .values("cause")
        .annotate(count=Count("id"))
        .order_by("-count", "cause")
    )


def tracking_log_list(*, delivery: Delivery, kind: str = "", origin: str = "") -> QuerySet:
    qs = TrackingLog.objects.filter(delivery=delivery)
    if kind:
        qs = qs.filter(kind=kind)
    if origin == "human":
        qs = qs.filter(is_machine=False)
    elif origin == "machine":
        qs = qs.filter(is_machine=True)
    return qs.order_by("-at", "-id")


def tracked_url_list(*, delivery: Delivery) -> QuerySet:
    """Tracked URLs with their human and machine hits (one GROUP BY)."""
    return (
        TrackedUrl.objects.filter(delivery=delivery)
        .annotate(
            clicks=Count("tracking_logs", filter=Q(tracking_logs__is_machine=False)),
            machine_clicks=Count("tracking_logs", filter=Q(tracking_logs__is_machine=True)),
        )
        .order_by("id")
    )


# --- charts ------------------------------------------------------------------------------
def processed_over_time(*, delivery: Delivery) -> tuple[str, list[tuple[datetime, int]]]:
    """Messages reaching a final status per second (a send of up to 10 minutes), per minute (up to
    6 hours) or per hour, oldest first.

    The sender sets `event_at` only when a log becomes final (sent, failed, unknown, cancelled; a
    soft failure waiting for its retry keeps none), so this reads the (delivery, event_at) index
    alone, counted per bucket in SQL (a hash of a few hundred buckets: no ORDER BY, which would make
    PostgreSQL sort a million rows first; the buckets are sorted here)."""
    logs = SendingLog.objects.filter(delivery=delivery, event_at__isnull=False)
    start, end = delivery.started_at, delivery.finished_at or timezone.now()
    if start is not None and end - start <= timedelta(minutes=10):
        unit = "second"  # a short send: per minute it would be one or two points joined by a made-up line
    else:
        unit = "minute" if start is None or end - start <= timedelta(hours=6) else "hour"
    rows = logs.annotate(bucket=Trunc("event_at", unit)).order_by().values_list("bucket").annotate(n=Count("*"))
    return unit, sorted(rows)


def engagement_per_hour(*, delivery: Delivery) -> tuple[str, list[tuple[datetime, str, int]]]:
    """Human opens and clicks per hour (per day past a week of data), oldest first."""
    events = TrackingLog.objects.filter(
        delivery=delivery, is_machine=False, kind__in=[TrackingLog.Kind.OPEN, TrackingLog.Kind.CLICK]
    ).order_by()
    bounds = events.aggregate(first=Min("at"), last=Max("at"))
    first, last = bounds["first"], bounds["last"]
    unit = "hour" if first is None or last - first <= timedelta(days=7) else "day"
    rows = events.annotate(bucket=Trunc("at", unit)).values_list("bucket", "kind").annotate(n=Count("*"))
    return unit, sorted(rows)


def chart_data_compute(*, delivery: Delivery) -> dict:
    """Both charts' rows, read from the logs (a pass over each message's logs: the worker does it
    with a recompute, the window only when no recompute stored them)."""
    return {"processed": processed_over_time(delivery=delivery), "engagement": engagement_per_hour(delivery=delivery)}


def chart_data_dump(data: dict) -> dict:
    """The chart rows as JSON (times in ISO 8601) for `KpiSnapshot.charts`."""
    unit, rows = data["processed"]
    e_unit, e_rows = data["engagement"]
    return {
        "processed": [unit, [[b.isoformat(), n] for b, n in rows]],
        "engagement": [e_unit, [[b.isoformat(), kind, n] for b, kind, n in e_rows]],
    }


def chart_data_load(stored: dict) -> dict:
    unit, rows = stored["processed"]
    e_unit, e_rows = stored["engagement"]
    return {
        "processed": (unit, [(datetime.fromisoformat(b), n) for b, n in rows]),
        "engagement": (e_unit, [(datetime.fromisoformat(b), kind, n) for b, kind, n in e_rows]),
    }


def stored_charts(snapshot: KpiSnapshot | None) -> dict | None:
    """The chart rows stored with the snapshot's figures (None when they are not those of its last
    computation)."""
    if snapshot is None or not snapshot.charts or snapshot.charts_as_of is None or snapshot.charts_as_of != snapshot.computed_at:
        return None
    return chart_data_load(snapshot.charts)


CHARTS_CACHE_SECONDS = 600


def deployment_chart_data(*, delivery: Delivery) -> tuple[dict, datetime | None]:
    """Both charts' rows and when they were computed: those the worker stored with the last
    recompute of the figures (the window draws the charts of the figures it shows, and loads them
    again when new figures land), else read from the logs now (no recompute yet). An ended send's
    rows read now are kept in this process's cache for a few minutes, keyed by what would change them."""
    snapshot = snapshot_of(delivery)
    stored = stored_charts(snapshot)
    if stored is not None:
        return stored, snapshot.charts_as_of
    if delivery.state not in FINAL_STATES:
        return chart_data_compute(delivery=delivery), None
    stamp = snapshot.computed_at.timestamp() if snapshot and snapshot.computed_at else 0
    key = f"kpis:charts:{delivery.pk}:{delivery.state}:{delivery.processed_count}:{stamp}"
    return cache.get_or_set(key, lambda: chart_data_compute(delivery=delivery), CHARTS_CACHE_SECONDS), None
