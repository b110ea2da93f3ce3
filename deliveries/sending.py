"""The send pipeline (DESIGN.md "The send pipeline").

PostgreSQL (or SQLite) decides who sends what, never the broker: a batch task claims a chunk of
pending logs with one conditional UPDATE (pending -> sending), sends the chunk over the batch's
reused connection, then writes the chunk's outcomes in one statement, with the delivery's
counters, in one transaction. A task delivered twice finds nothing left to claim.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, DateTimeField, ExpressionWrapper, F, Min, Q, TextField, Value, When
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from audiences.models import Profile

from .channels.base import Outcome
from .channels.email import MessageSkeleton, transport_for
from .models import (
    FINAL_SENDING,
    Delivery,
    FailureReason,
    FailureType,
    JournalEntry,
    SendingLog,
    SendingStatus,
    State,
)
from .services import FINISHED_TEXT, delivery_send_ended, journal_add

log = logging.getLogger(__name__)

ACTIVE = (State.IN_PROGRESS, State.RETRY_IN_PROGRESS)
PROFILE_FIELDS = ("id", "email", "first_name", "last_name", "language", "time_zone", "phone", "attributes")


def _setting(name: str, default):
    return getattr(settings, name, default)


def backoff(attempts: int) -> timedelta:
    """Wait before attempt n+1 (DOMAIN.md §4: 15 min, 30 min, 1 h, 2 h, then every 4 h)."""
    steps = _setting("RETRY_BACKOFF_SECONDS", [900, 1800, 3600, 7200, 14400])
    return timedelta(seconds=steps[min(attempts - 1, len(steps) - 1)])


# --- claiming -----------------------------------------------------------------------------------
def claim_chunk(*, delivery_id: int, lo: int, hi: int, limit: int, now) -> list[tuple[int, str, int | None, int]]:
    """Move up to `limit` due pending logs with ids in [lo, hi] to `sending`; return (id, address,
    profile_id, attempts) of the rows this caller won. Competing workers skip each other's rows
    (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite serializes writers anyway).

    Only while the delivery is sending (in progress or a retry pass): the state is part of the
    claim's condition, so once a Pause or a Stop is committed no worker claims another row; the
    chunks already claimed (at most one per batch) are the only messages still going out."""
    table = SendingLog._meta.db_table
    deliveries = Delivery._meta.db_table
    ts = connection.ops.adapt_datetimefield_value(now)
    active = ", ".join(["%s"] * len(ACTIVE))
    pick = (
        f"SELECT id FROM {table} WHERE delivery_id = %s AND status = %s AND id BETWEEN %s AND %s"
        f" AND (next_attempt_at IS NULL OR next_attempt_at <= %s)"
        f" AND EXISTS (SELECT 1 FROM {deliveries} WHERE id = %s AND state IN ({active})) ORDER BY id LIMIT %s"
    )
    pick_params = [delivery_id, SendingStatus.PENDING, lo, hi, ts, delivery_id, *ACTIVE, limit]
    if connection.vendor == "postgresql":
        # A materialized CTE: PostgreSQL may otherwise re-run a LIMIT subquery of an UPDATE and
        # claim more than `limit` rows; SKIP LOCKED lets competing workers take other rows.
        sql = (
            f"WITH picked AS MATERIALIZED ({pick} FOR UPDATE OF {table} SKIP LOCKED) "
            f"UPDATE {table} AS t SET status = %s, claimed_at = %s FROM picked WHERE t.id = picked.id AND t.status = %s "
            f"RETURNING t.id, t.address, t.profile_id, t.attempts"
        )
        params = [*pick_params, SendingStatus.SENDING, ts, SendingStatus.PENDING]
    else:  # SQLite serializes writers: a plain conditional UPDATE is enough
        sql = f"UPDATE {table} SET status = %s, claimed_at = %s WHERE id IN ({pick}) AND status = %s RETURNING id, address, profile_id, attempts"
        params = [SendingStatus.SENDING, ts, *pick_params, SendingStatus.PENDING]
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    rows.sort()
    return rows


# --- outcomes -----------------------------------------------------------------------------------
def write_outcomes(*, delivery: Delivery, results: list[tuple[SendingLog, object]], now) -> None:
    """Write a chunk's outcomes (one UPDATE) and the delivery's counters, in one transaction;
    then update quarantine."""
    sent, failed, retry, unknown = [], [], [], []
    validity_end = (delivery.started_at or now) + delivery.validity
    for row, outcome in results:
        row.attempts += 1
        row.claimed_at = None
        if outcome.ok:
            row.status, row.event_at, row.failure_type, row.failure_reason, row.failure_text = SendingStatus.SENT, now, "", "", ""
            row.next_attempt_at = None
            sent.append(row)
            continue
        if getattr(outcome, "unknown", False):  # may have been delivered: final, never resent
            row.status, row.event_at, row.failure_type, row.failure_reason = SendingStatus.UNKNOWN, now, "", ""
            row.failure_text, row.next_attempt_at = outcome.text[:1000], None
            unknown.append(row)
            continue
        row.failure_type, row.failure_reason, row.failure_text = outcome.failure_type, outcome.failure_reason, outcome.text[:1000]
        next_at = now + backoff(row.attempts)
        if outcome.failure_type == FailureType.SOFT and next_at < validity_end:
            row.status, row.next_attempt_at = SendingStatus.PENDING, next_at
            retry.append(row)
        else:
            row.status, row.event_at, row.next_attempt_at = SendingStatus.FAILED, now, None
            failed.append(row)
    rows = [r for r, _o in results]
    with transaction.atomic():
        update_outcomes(rows)
        if sent or failed or unknown:
            Delivery.objects.filter(pk=delivery.pk).update(
                sent_count=F("sent_count") + len(sent),
                failed_count=F("failed_count") + len(failed),
                processed_count=F("processed_count") + len(sent) + len(failed) + len(unknown),
            )
        if unknown:
            journal_add(
                delivery=delivery.pk,
                level=JournalEntry.Level.WARNING,
                text=ngettext(
                    "%(n)d message in an unknown state: the connection to the relay was lost after the message "
                    "was sent, before its reply. It is not resent automatically.",
                    "%(n)d messages in an unknown state: the connection to the relay was lost after the messages "
                    "were sent, before their reply. They are not resent automatically.",
                    len(unknown),
                )
                % {"n": len(unknown)},
            )
    not_the_address = {row.pk for row, outcome in results if not getattr(outcome, "quarantine", True)}
    _quarantine(delivery=delivery, sent=sent, failures=[r for r in failed + retry if r.pk not in not_the_address], now=now)
    if failed:
        autopause_if_needed(delivery_id=delivery.pk, now=now)


def autopause_if_needed(*, delivery_id: int, now) -> bool:
    """Pause a send whose bounces + errors cross the hard limit (a broken list or a blocked sender
    stops before it burns the domain's reputation). One conditional UPDATE decides."""
    from .services import sending_policy_get

    policy = sending_policy_get()
    paused = Delivery.objects.filter(
        pk=delivery_id,
        state__in=ACTIVE,
        autopaused_at__isnull=True,  # once per send: after a person resumes, it is their call
        processed_count__gte=policy.autopause_min_processed,
        failed_count__gt=F("processed_count") * policy.autopause_bounce_rate,
    ).update(state=State.PAUSED, autopaused_at=now)
    if paused:
        d = Delivery.objects.get(pk=delivery_id)
        journal_add(
            delivery=d,
            level=JournalEntry.Level.CRITICAL,
            text=_(
                "Sending paused automatically: bounces + errors reached %(rate).1f%% of %(n)d processed messages "
                "(limit %(limit).0f%% after %(min)d). Check the list and the sender, then resume or stop."
            )
            % {"rate": d.failed_count * 100 / d.processed_count, "n": d.processed_count,
               "limit": policy.autopause_bounce_rate * 100, "min": policy.autopause_min_processed},  # fmt: skip
        )
    return bool(paused)


OUTCOME_COLUMNS = ("status", "attempts", "event_at", "next_attempt_at", "failure_type", "failure_reason", "failure_text", "message_id")


def update_outcomes(rows: list[SendingLog]) -> None:
    """Write a chunk's outcomes in ONE statement (UPDATE … FROM a VALUES list); Django's
    bulk_update builds a CASE per row and field, which cost more than sending the messages."""
    if not rows:
        return
    pg = connection.vendor == "postgresql"
    adapt = connection.ops.adapt_datetimefield_value
    placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    params: list = []
    for r in rows:
        params += [r.id, r.status, r.attempts, adapt(r.event_at), adapt(r.next_attempt_at), r.failure_type, r.failure_reason, r.failure_text, r.message_id]
    ts = "::timestamptz" if pg else ""
    table = SendingLog._meta.db_table
    sql = (
        f"WITH v (id, {', '.join(OUTCOME_COLUMNS)}) AS (VALUES {placeholders}) "
        f"UPDATE {table} SET status = v.status, attempts = v.attempts, claimed_at = NULL, event_at = v.event_at{ts}, "
        f"next_attempt_at = v.next_attempt_at{ts}, failure_type = v.failure_type, failure_reason = v.failure_reason, "
        f"failure_text = v.failure_text, message_id = v.message_id FROM v WHERE {table}.id = v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _quarantine(*, delivery, sent, failures, now) -> None:
    from audiences.services import quarantine_record_failures, quarantine_record_successes

    if sent:
        quarantine_record_successes(addresses=[r.address for r in sent], channel=delivery.channel, at=now)
    if failures:
        quarantine_record_failures(
            failures=[
                {"address": r.address, "channel": delivery.channel, "failure_type": r.failure_type,
                 "reason": r.failure_reason, "text": r.failure_text, "at": now}  # fmt: skip
                for r in failures
                if r.failure_type in (FailureType.HARD, FailureType.SOFT)
            ]
        )


# --- the batch ----------------------------------------------------------------------------------
def send_batch(*, delivery_id: int, lo: int, hi: int) -> int:
    """Send every due pending log of `delivery_id` with id in [lo, hi], a chunk at a time.
    Returns how many messages this call handled. Safe to run twice at once."""
    delivery = Delivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.state not in ACTIVE:
        return 0
    chunk_size = int(_setting("SEND_CHUNK", 50))
    skeleton = MessageSkeleton(delivery)
    handled = 0
    transport = transport_for(skeleton)
    opened = False
    builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"build-{delivery_id}")
    rate_limited = False
    try:
        while True:
            now = timezone.now()
            limit = chunk_size
            if delivery.rate_limit_per_hour:
                limit = rate_room(delivery=delivery, now=now, chunk_size=chunk_size)
                if limit == 0:  # the hour's budget is spent: come back when the window has moved
                    dispatch_later(delivery_id=delivery_id, seconds=RATE_RETRY_SECONDS)
                    rate_limited = True
                    break
            claimed = claim_chunk(delivery_id=delivery_id, lo=lo, hi=hi, limit=limit, now=now)
            if not claimed:  # nothing left in the range, or the send was paused or stopped
                break
            profiles = {
                p["id"]: p for p in Profile.objects.filter(id__in=[c[2] for c in claimed if c[2]]).values(*PROFILE_FIELDS)
            }
            if not opened:
                try:
                    transport.open()
                except OSError as e:
                    log.warning("delivery %s: relay unreachable: %s", delivery_id, e)
                opened = True
            # One thread renders the chunk's messages while this one sends them: rendering uses the
            # CPU while the SMTP round trips wait on the network, so the two overlap.
            built = [
                builder.submit(skeleton.build, sending_log_id=log_id, address=address, profile=profiles.get(profile_id, {"email": address}))
                for log_id, address, profile_id, _attempts in claimed
            ]
            results = []
            for (log_id, address, profile_id, attempts), future in zip(claimed, built, strict=True):
                row = SendingLog(id=log_id, delivery_id=delivery_id, address=address, profile_id=profile_id, attempts=attempts)
                try:
                    message = future.result()
                except Exception as e:  # the profile changed since preparation and no longer renders
                    results.append((row, Outcome(ok=False, code=0, failure_type=FailureType.HARD, failure_reason="not_defined",
                                                 text=f"Personalization failed for this recipient: {type(e).__name__}: {e}",
                                                 quarantine=False)))  # fmt: skip
                    continue
                row.message_id = message.message_id
                results.append((row, transport.send(message)))
            write_outcomes(delivery=delivery, results=results, now=timezone.now())
            handled += len(claimed)
    finally:
        builder.shutdown(cancel_futures=True)
        if opened:
            transport.close()
    if not rate_limited:
        delivery_finish_if_done(delivery_id=delivery_id)
    return handled


RATE_RETRY_SECONDS = 10


def dispatch_later(*, delivery_id: int, seconds: float) -> None:
    from .tasks import dispatch_delivery

    dispatch_delivery.apply_async((delivery_id,), countdown=seconds)


def rate_room(*, delivery: Delivery, now, chunk_size: int) -> int:
    """How many messages may go now under the delivery's hourly limit, shared by every worker:
    the limit spread per minute, minus what was processed in the last minute (an index-only count
    over (delivery, event_at))."""
    per_minute = max(1, delivery.rate_limit_per_hour // 60)
    recent = SendingLog.objects.filter(delivery_id=delivery.pk, event_at__gt=now - timedelta(minutes=1)).count()
    return max(0, min(chunk_size, per_minute - recent))


# --- dispatch and finish ----------------------------------------------------------------------
def dispatch(*, delivery_id: int) -> int:
    """Cut the due pending logs into id ranges and enqueue one batch task per range."""
    from .tasks import send_batch_task

    d = Delivery.objects.filter(pk=delivery_id).first()
    if d is None:
        return 0
    if d.state == State.RETRY_PENDING:
        if Delivery.objects.filter(pk=d.pk, state=State.RETRY_PENDING).update(state=State.RETRY_IN_PROGRESS):
            journal_add(delivery=d, text=_("Retry pass started."))
        d.state = State.RETRY_IN_PROGRESS
    if d.state not in ACTIVE:
        return 0
    now = timezone.now()
    due = SendingLog.objects.filter(delivery_id=delivery_id, status=SendingStatus.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    ids = list(due.order_by("id").values_list("id", flat=True))
    if not ids:
        delivery_finish_if_done(delivery_id=delivery_id)
        return 0
    size = int(_setting("SEND_BATCH", 1000))
    if d.rate_limit_per_hour:
        size = len(ids)  # one batch paces the whole send (it re-enqueues itself when the budget is spent)
    batches = [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]
    for lo, hi in batches:
        send_batch_task.delay(delivery_id, lo, hi)
    return len(batches)


def delivery_finish_if_done(*, delivery_id: int) -> str | None:
    """After a pass: finished when every log is final; retry pending when soft failures wait."""
    from .tasks import dispatch_delivery

    counts = dict(
        SendingLog.objects.filter(delivery_id=delivery_id).values_list("status").annotate(n=Count("id")).values_list("status", "n")
    )
    pending, sending = counts.get(SendingStatus.PENDING, 0), counts.get(SendingStatus.SENDING, 0)
    if sending:
        return None
    now = timezone.now()
    if not pending:
        sent = counts.get(SendingStatus.SENT, 0)
        final_total = sum(counts.get(s, 0) for s in FINAL_SENDING)
        all_failed = final_total > 0 and sent == 0 and counts.get(SendingStatus.FAILED, 0) == final_total
        target = State.FAILED if all_failed else State.FINISHED
        with transaction.atomic():
            if Delivery.objects.filter(pk=delivery_id, state__in=ACTIVE).update(state=target, finished_at=now):
                delivery_send_ended(delivery_id=delivery_id)
                if target == State.FINISHED:
                    journal_add(delivery=delivery_id, text=FINISHED_TEXT)
                else:
                    journal_add(
                        delivery=delivery_id,
                        level=JournalEntry.Level.CRITICAL,
                        text=_("Delivery failed: every message was refused. Check the sending logs for the reasons."),
                    )
                return target
        return None
    next_due = SendingLog.objects.filter(delivery_id=delivery_id, status=SendingStatus.PENDING).aggregate(m=Min("next_attempt_at"))["m"]
    if next_due is None or next_due <= now:
        dispatch_delivery.delay(delivery_id)  # due rows left (e.g. a range claimed elsewhere): go again
        return None
    with transaction.atomic():
        if Delivery.objects.filter(pk=delivery_id, state__in=ACTIVE).update(state=State.RETRY_PENDING):
            journal_add(
                delivery=delivery_id,
                text=ngettext("Pass done: %(n)d message will be retried from %(when)s.", "Pass done: %(n)d messages will be retried from %(when)s.", pending)
                % {"n": pending, "when": f"{next_due:%Y-%m-%d %H:%M:%S} UTC"},
            )
            transaction.on_commit(lambda: dispatch_delivery.apply_async((delivery_id,), countdown=max(0.0, (next_due - now).total_seconds())))
            return State.RETRY_PENDING
    return None


def deliveries_expire(*, now=None) -> int:
    """Fail the pending logs of sends whose validity period ended (DOMAIN.md §5: soft failures are
    retried until then; a send paused past it sends nothing more). One UPDATE per message, not per
    recipient; a log keeps the reason of its last soft failure. Returns how many logs failed."""
    now = now or timezone.now()
    ends = ExpressionWrapper(F("started_at") + F("validity"), output_field=DateTimeField())
    expired = (
        Delivery.objects.filter(state__in=(*ACTIVE, State.RETRY_PENDING, State.PAUSED), started_at__isnull=False)
        .annotate(ends=ends)
        .filter(ends__lte=now)
        .values_list("pk", "state", "validity")
    )
    text = _("Not sent: the validity period of the send ended.")
    total = 0
    for delivery_id, state, validity in expired:
        with transaction.atomic():
            n = SendingLog.objects.filter(delivery_id=delivery_id, status=SendingStatus.PENDING).update(
                status=SendingStatus.FAILED, event_at=now, next_attempt_at=None,
                failure_type=Case(When(failure_type="", then=Value(FailureType.SOFT)), default=F("failure_type")),
                failure_reason=Case(When(failure_reason="", then=Value(FailureReason.NOT_DEFINED)), default=F("failure_reason")),
                failure_text=Case(When(failure_text="", then=Value(text)), default=F("failure_text"), output_field=TextField()),
            )  # fmt: skip
            if not n:
                continue
            Delivery.objects.filter(pk=delivery_id).update(failed_count=F("failed_count") + n, processed_count=F("processed_count") + n)
            # A send waiting for its next retry pass has nothing left to wait for: it ends now.
            Delivery.objects.filter(pk=delivery_id, state=State.RETRY_PENDING).update(state=State.RETRY_IN_PROGRESS)
            journal_add(
                delivery=delivery_id,
                level=JournalEntry.Level.WARNING,
                text=ngettext(
                    "%(n)d message not sent: the validity period (%(hours)s h) ended.",
                    "%(n)d messages not sent: the validity period (%(hours)s h) ended.",
                    n,
                )
                % {"n": n, "hours": f"{validity.total_seconds() / 3600:g}"},
            )
        total += n
        if state != State.PAUSED:  # a paused send ends when it is resumed (nothing is left to send)
            delivery_finish_if_done(delivery_id=delivery_id)
    return total


def deliveries_tick(*, now=None) -> dict:
    """Beat, every minute: start retry passes that are due, fail logs whose validity ended, reap
    claims whose worker died (-> unknown: never resent automatically), re-dispatch stalled sends."""
    from .tasks import dispatch_delivery

    now = now or timezone.now()
    report = {"retries": 0, "reaped": 0, "redispatched": 0, "expired": deliveries_expire(now=now)}
    for d in Delivery.objects.filter(state=State.RETRY_PENDING):
        if SendingLog.objects.filter(delivery=d, status=SendingStatus.PENDING, next_attempt_at__lte=now).exists():
            dispatch_delivery.delay(d.pk)
            report["retries"] += 1
    claim_timeout = timedelta(seconds=int(_setting("CLAIM_TIMEOUT_SECONDS", 600)))
    stale = SendingLog.objects.filter(status=SendingStatus.SENDING, claimed_at__lt=now - claim_timeout)
    for delivery_id in stale.order_by().values_list("delivery_id", flat=True).distinct():
        with transaction.atomic():
            reaped = SendingLog.objects.filter(
                delivery_id=delivery_id, status=SendingStatus.SENDING, claimed_at__lt=now - claim_timeout
            ).update(status=SendingStatus.UNKNOWN, event_at=now, failure_text="Worker stopped while sending: the message may or may not have been sent.")
            Delivery.objects.filter(pk=delivery_id).update(processed_count=F("processed_count") + reaped)
            journal_add(
                delivery=delivery_id,
                level=JournalEntry.Level.WARNING,
                text=ngettext(
                    "%(n)d message in an unknown state: its worker stopped while sending. It is not resent automatically.",
                    "%(n)d messages in an unknown state: their worker stopped while sending. They are not resent automatically.",
                    reaped,
                )
                % {"n": reaped},
            )
        report["reaped"] += reaped
        delivery_finish_if_done(delivery_id=delivery_id)
    # The reconciler: a send in progress with due pending rows, nothing claimed and no outcome for
    # a while lost its tasks (a broker restart, a worker killed): enqueue it again. Claims make a
    # duplicate harmless; the quiet period keeps a long queue from being enqueued twice.
    quiet = now - timedelta(seconds=int(_setting("RECONCILE_AFTER_SECONDS", 300)))
    for d in Delivery.objects.filter(state__in=ACTIVE, started_at__lt=quiet):
        logs = SendingLog.objects.filter(delivery=d)
        stalled = (
            logs.filter(status=SendingStatus.PENDING).filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)).exists()
            and not logs.filter(status=SendingStatus.SENDING).exists()
            and not logs.filter(event_at__gte=quiet).exists()
        )
        if stalled:
            journal_add(delivery=d, level=JournalEntry.Level.WARNING, text=_("The send had stalled (its tasks were lost): it was enqueued again."))
            dispatch_delivery.delay(d.pk)
            report["redispatched"] += 1
    return report
