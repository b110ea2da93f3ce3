"""KPI computation and the recompute lock (writes). DOMAIN.md §4."""

import logging
import time
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.formats import time_format
from django.utils.translation import gettext as _

from accounts.errors import DispatchError
from accounts.roles import ACCESS, role_required_message
from accounts.selectors import user_has_any_role
from deliveries.models import (
    FINAL_STATES,
    SENDING_STATES,
    STARTED_STATES,
    Delivery,
    FailureType,
    SendingLog,
    SendingStatus,
)
from tracking.models import TrackingLog

from .models import KpiSnapshot
from .selectors import chart_data_compute, chart_data_dump, snapshot_covers_end, snapshot_of

logger = logging.getLogger(__name__)

# DOMAIN.md §3: Start deliveries and Monitor deliveries (and Administration) may Compute stats.
COMPUTE_ROLES = ACCESS["compute_stats"]


def _lock_timeout() -> timedelta:
    return timedelta(seconds=settings.KPI_COMPUTE_LOCK_TIMEOUT)


def lock_is_free_q(*, now=None) -> Q:
    """Snapshots whose recompute lock is free: never taken, released, or stale (its task vanished)."""
    now = now or timezone.now()
    return Q(computing_since__isnull=True) | Q(computing_since__lt=now - _lock_timeout())


_LOG, _TRK = SendingLog._meta.db_table, TrackingLog._meta.db_table
# One statement. Its first part is the pass over the message's sending logs: counts by status and
# failure type, and of the first human opens and clicks (which tracking keeps on the log: any human
# event sets the first open, a click the first click); on PostgreSQL it reads the (delivery,
# status, id) index alone, which carries those columns, as a bare count by status does. Opt-outs and
# mirror pages are distinct sending logs of the few tracking logs of those kinds (index-only too).
_KPI_SQL = f"""
SELECT 'log', status, failure_type, count(*), count(first_open_at), count(first_click_at)
FROM {_LOG} WHERE delivery_id = %(d)s GROUP BY status, failure_type
UNION ALL
SELECT 'tracking', kind, '', count(DISTINCT sending_log_id), 0, 0 FROM {_TRK}
WHERE delivery_id = %(d)s AND kind IN (%(optout)s, %(mirror)s) AND is_machine = %(no)s GROUP BY kind
"""


def _figures(delivery_id: int) -> dict:
    """Every figure of a snapshot, from one statement (DOMAIN.md §4)."""
    S, K = SendingStatus, TrackingLog.Kind
    params = {"d": delivery_id, "optout": K.OPTOUT.value, "mirror": K.MIRROR.value, "no": False}
    with connection.cursor() as cursor:
        cursor.execute(_KPI_SQL, params)
        rows = cursor.fetchall()
    figures = dict.fromkeys(
        ("to_deliver", "skipped", "delivered", "bounces", "hard_bounces", "soft_bounces", "unknown", "cancelled", "pending",
         "unique_opens", "unique_clicks", "opt_outs", "mirror_pages"), 0,
    )  # fmt: skip
    for part, status, failure_type, n, opens, clicks in rows:
        if part == "tracking":
            figures["opt_outs" if status == K.OPTOUT else "mirror_pages"] += n
            continue
        figures["unique_opens"] += opens
        figures["unique_clicks"] += clicks
        if status == S.SKIPPED:  # left since preparation: counted apart (DOMAIN.md §5), not to deliver
            figures["skipped"] += n
            continue
        figures["to_deliver"] += n
        if status == S.SENT:
            figures["delivered"] += n
        elif status == S.FAILED:
            figures["bounces"] += n
            if failure_type == FailureType.HARD:
                figures["hard_bounces"] += n
            elif failure_type == FailureType.SOFT:
                figures["soft_bounces"] += n
        elif status == S.UNKNOWN:
            figures["unknown"] += n
        elif status == S.CANCELLED:
            figures["cancelled"] += n
        elif status in (S.PENDING, S.SENDING):
            figures["pending"] += n
    return figures


def kpis_compute(*, delivery_id: int) -> KpiSnapshot:
    """Recompute every KPI of a delivery from its logs (one statement: `_KPI_SQL`) and store the snapshot.

    `computed_at` is when the logs were read (not when the write ended), so a recompute that read
    them before a send ended is seen as stale; and it never overwrites a snapshot read later (two
    recomputes that overlap leave the newer figures). Releases the recompute lock. Raises
    Delivery.DoesNotExist for a delivery that does not exist.
    """
    as_of = timezone.now()
    started = time.perf_counter()
    if not Delivery.objects.filter(pk=delivery_id).exists():
        raise Delivery.DoesNotExist(f"Delivery {delivery_id} does not exist.")
    values = _figures(delivery_id)
    duration_ms = round((time.perf_counter() - started) * 1000)
    KpiSnapshot.objects.bulk_create([KpiSnapshot(delivery_id=delivery_id)], ignore_conflicts=True)
    written = KpiSnapshot.objects.filter(Q(computed_at__isnull=True) | Q(computed_at__lte=as_of), delivery_id=delivery_id).update(
        **values, computed_at=as_of, duration_ms=duration_ms, computing_since=None, computing_requested_by=None
    )
    if not written:  # a recompute that read the logs after this one already wrote its figures
        kpis_lock_release(delivery_id=delivery_id)
    return KpiSnapshot.objects.get(delivery_id=delivery_id)


def kpis_charts_store(*, delivery_id: int) -> bool:
    """After a recompute, in the worker: read the Deployment window's chart rows from the logs and
    store them with the figures they go with (only if no later recompute replaced those figures
    meanwhile). The window then draws them without reading the logs. True when stored."""
    snapshot = KpiSnapshot.objects.select_related("delivery").filter(delivery_id=delivery_id).first()
    if snapshot is None or snapshot.computed_at is None:
        return False
    data = chart_data_dump(chart_data_compute(delivery=snapshot.delivery))
    return bool(
        KpiSnapshot.objects.filter(delivery_id=delivery_id, computed_at=snapshot.computed_at).update(
            charts=data, charts_as_of=snapshot.computed_at
        )
    )


def kpis_lock_release(*, delivery_id: int) -> None:
    KpiSnapshot.objects.filter(delivery_id=delivery_id).update(computing_since=None, computing_requested_by=None)


def _lock_take(*, delivery_id: int, user=None) -> bool:
    """Take the recompute lock of one delivery with one conditional UPDATE (portable: SQLite and
    PostgreSQL); False when a recompute is already running."""
    now = timezone.now()
    KpiSnapshot.objects.bulk_create([KpiSnapshot(delivery_id=delivery_id)], ignore_conflicts=True)
    taken = KpiSnapshot.objects.filter(lock_is_free_q(now=now), delivery_id=delivery_id).update(
        computing_since=now, computing_requested_by=user
    )
    return bool(taken)


RECOMPUTE_TASK = "kpis.recompute"  # tasks.py registers it under these names
SEND_ENDED_TASK = "kpis.send_ended"


def _enqueue(delivery_id: int) -> None:
    """Enqueue the recompute after commit (what `delay_on_commit` does), releasing the lock if the
    broker cannot take it, so a broker outage does not block Compute stats until the lock times out.
    The task is looked up by name in the Celery app's registry: tasks import services, never the
    other way round (KpisConfig.ready registers the tasks in every process)."""

    def send() -> None:
        try:
            current_app.tasks[RECOMPUTE_TASK].delay(delivery_id)
        except Exception:
            kpis_lock_release(delivery_id=delivery_id)
            raise

    transaction.on_commit(send)


def kpis_compute_request(*, delivery: Delivery, user) -> None:
    """Compute stats: enqueue a recompute of `delivery`'s KPIs now (after commit).

    Needs Monitor deliveries, Start deliveries or Administration. While a recompute runs, a second
    request is refused (409) with a sentence saying so, so two clicks start one computation.
    """
    if not user_has_any_role(user=user, roles=COMPUTE_ROLES):
        raise PermissionDenied(role_required_message(*COMPUTE_ROLES))
    if delivery.state not in STARTED_STATES:
        raise DispatchError(
            _("This message has not been sent yet, so there are no statistics to compute. Confirm the send first."),
            code="not_sent",
        )
    if not _lock_take(delivery_id=delivery.pk, user=user):
        since = KpiSnapshot.objects.filter(pk=delivery.pk).values_list("computing_since", flat=True).first()
        raise DispatchError(
            _(
                "Statistics are already being computed for this message (started at %(time)s): "
                "the figures will appear when it ends, so there is no need to click again."
            )
            % {"time": time_format(timezone.localtime(since), "H:i:s") if since else "?"},
            code="compute_running",
        )
    _enqueue(delivery.pk)


def kpis_compute_if_stale(*, delivery: Delivery) -> bool:
    """After a send ends, make sure the snapshot covers it: enqueue one recompute (under the lock)
    when there is no snapshot yet or it predates the end of the send. True when one was enqueued."""
    if delivery.state not in FINAL_STATES:
        return False
    if snapshot_covers_end(delivery, snapshot_of(delivery)):  # no query when fetched with select_related("kpis")
        return False
    if not _lock_take(delivery_id=delivery.pk):
        return False
    _enqueue(delivery.pk)
    return True


def kpis_send_ended(*, delivery_id: int) -> None:
    """deliveries' hook (`deliveries.hooks.on_send_ended`, registered in KpisConfig.ready): a send
    just ended and its end is committed: enqueue `kpis.send_ended`, which recomputes its KPIs in a
    worker. A broker that cannot take it is logged by the hook: the page or the hourly job
    recomputes later."""
    current_app.tasks[SEND_ENDED_TASK].delay(delivery_id)


def kpis_compute_after_send(*, delivery_id: int) -> bool:
    """A send just ended, whatever ended it (its first pass, a retry pass, the beat's reaper, Stop
    sending, every message refused): compute its KPIs now, in the worker, so the figures cover
    the end without anyone opening the page. Run by the task `kpis.send_ended`, which deliveries'
    send-ended hook enqueues after the commit that ends the send (kpis_send_ended).

    Once per end: nothing to do when the snapshot already covers the end, or when a recompute
    requested after the end is on its way (the page asked first); a recompute requested before the
    end (the hourly job, a click) may have read the logs too early, so this one takes over its lock.
    True when it computed.
    """
    delivery = Delivery.objects.select_related("kpis").filter(pk=delivery_id).first()
    if delivery is None or delivery.state not in FINAL_STATES:
        return False
    if snapshot_covers_end(delivery, snapshot_of(delivery)):
        return False
    ended = delivery.finished_at or delivery.updated_at
    now = timezone.now()
    KpiSnapshot.objects.bulk_create([KpiSnapshot(delivery_id=delivery_id)], ignore_conflicts=True)
    taken = KpiSnapshot.objects.filter(lock_is_free_q(now=now) | Q(computing_since__lt=ended), delivery_id=delivery_id).update(
        computing_since=now, computing_requested_by=None
    )
    if not taken:
        return False
    kpis_compute(delivery_id=delivery_id)
    kpis_charts_store(delivery_id=delivery_id)
    return True


def recent_deliveries_q(*, now=None) -> Q:
    """Messages sent in the last KPI_RECOMPUTE_WINDOW_DAYS days (started or finished then, or whose
    last wave of a send per recipient's time went then), or sending now."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.KPI_RECOMPUTE_WINDOW_DAYS)
    return Q(state__in=STARTED_STATES) & (
        Q(started_at__gte=cutoff) | Q(finished_at__gte=cutoff) | Q(last_due_at__gte=cutoff) | Q(state__in=SENDING_STATES)
    )


def kpis_recompute_recent(*, now=None) -> list[int]:
    """The hourly job: lock and enqueue a recompute of every message sent in the last 30 days
    (skipping those whose recompute is already running). Returns the ids enqueued."""
    now = now or timezone.now()
    recent = Delivery.objects.filter(recent_deliveries_q(now=now))
    missing = recent.filter(kpis__isnull=True).values_list("pk", flat=True)
    KpiSnapshot.objects.bulk_create([KpiSnapshot(delivery_id=pk) for pk in missing], ignore_conflicts=True)
    stamp = timezone.now()
    KpiSnapshot.objects.filter(lock_is_free_q(now=stamp), delivery__in=recent).update(
        computing_since=stamp, computing_requested_by=None
    )
    ids = list(KpiSnapshot.objects.filter(computing_since=stamp).values_list("delivery_id", flat=True))
    for delivery_id in ids:
        _enqueue(delivery_id)
    logger.info("kpis: hourly recompute enqueued for %d message(s)", len(ids))
    return ids
