"""The send pipeline (DESIGN.md "The send pipeline").

PostgreSQL (or SQLite) decides who sends what, never the broker. A batch task (an id range of a
delivery's sending logs) runs one `BatchRun`:

- its thread claims chunks of due pending logs with ONE statement each (pending -> sending, with a
  claim token; FOR UPDATE SKIP LOCKED where workers compete) that also re-checks consent (a
  recipient who left since preparation ends `skipped`, with an exclusion log and the delivery's
  counters, in the same statement) and returns the profile data to render;
- `SEND_CONNECTIONS` relay connections per worker process (coroutines of one event-loop thread,
  deliveries/connections.py; at most `SEND_MAX_CONNECTIONS_PER_RELAY` per relay across every
  process) each render the next claimed row and send it (pipelined where the relay allows it), so
  rendering overlaps the network waits;
- the batch's thread writes the outcomes of many messages with ONE statement (the logs, only where
  they still hold their claim token, and the delivery's counters), while the connections go on
  sending. When the database is away, outcomes wait in memory and are written when it returns.

A task run twice finds nothing left to claim. A worker that dies leaves at most the rows it had
claimed and not written (2 x SEND_CHUNK per process): the reaper marks them "unknown" (never resent
automatically; Resend unknown is an operator's choice).
"""

from __future__ import annotations

import collections
import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Case, Count, F, Min, Q, TextField, Value, When
from django.db.models.functions import Greatest
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from audiences.models import Profile
from audiences.services import quarantine_record_failures, quarantine_record_successes

from . import clock, queue
from .channels.base import Outcome
from .channels.email import skeleton_for, uses_smtp_relay
from .connections import AsyncSmtpSender, ThreadedSender, Work
from .consent import left_cause_sql, left_joins_sql
from .lifecycle import FINISHED_TEXT, delivery_send_ended, journal_add
from .models import (
    Delivery,
    ExclusionCause,
    ExclusionLog,
    FailureReason,
    FailureType,
    JournalEntry,
    SendingLog,
    SendingStatus,
    State,
)
from .selectors import sending_policy_get

log = logging.getLogger(__name__)

ACTIVE = (State.IN_PROGRESS, State.RETRY_IN_PROGRESS)
DB_ERRORS = (OperationalError, InterfaceError)


def _setting(name: str, default):
    return getattr(settings, name, default)


def backoff(attempts: int) -> timedelta:
    """Wait before attempt n+1 (DOMAIN.md §4: 15 min, 30 min, 1 h, 2 h, then every 4 h)."""
    steps = _setting("RETRY_BACKOFF_SECONDS", [900, 1800, 3600, 7200, 14400])
    return timedelta(seconds=steps[min(attempts - 1, len(steps) - 1)])


def _n(value: int) -> str:
    return f"{value:,}"


# --- claiming -----------------------------------------------------------------------------------
@dataclass(slots=True)
class Claimed:
    """A claimed sending log, with what rendering it needs."""

    id: int
    address: str
    attempts: int
    token: int
    profile: dict
    known_address: bool  # the address has a quarantine row (a success may change it)
    due_at: object = None  # its own send time (a send per recipient's time): its validity runs from it
    message_id: str = ""


def _skipped_text(cause: str) -> str:
    return _("Not sent: the recipient left since preparation (%(cause)s).") % {"cause": ExclusionCause(cause).label}


def claim_chunk(*, delivery: Delivery, lo: int, hi: int, limit: int, now) -> list[Claimed]:
    """Claim up to `limit` due pending logs of `delivery` with ids in [lo, hi] and return those to
    send; recipients who left since preparation are settled in the same statement (skipped, an
    exclusion log found now, the delivery's skipped count) and not returned.

    Only while the delivery is sending (in progress or a retry pass): the state is part of the
    claim's condition, so once a Pause or a Stop is committed no worker claims another row."""
    token = random.getrandbits(62)
    if connection.vendor == "postgresql":
        rows = _claim_postgresql(delivery=delivery, lo=lo, hi=hi, limit=limit, now=now, token=token)
    else:
        rows = _claim_portable(delivery=delivery, lo=lo, hi=hi, limit=limit, now=now, token=token)
    claimed = []
    for log_id, address, attempts, known, due_at, email, first, last, language, tz, phone, attributes in rows:
        if isinstance(attributes, str):
            attributes = json.loads(attributes)
        if isinstance(due_at, str):  # SQLite
            due_at = connection.ops.convert_datetimefield_value(due_at, None, connection) if due_at else None
        profile = {"email": email or address, "first_name": first, "last_name": last, "language": language,
                   "time_zone": tz, "phone": phone, "attributes": attributes or {}}  # fmt: skip
        claimed.append(Claimed(log_id, address, attempts, token, profile, bool(known), due_at))
    return claimed


_PROFILE_COLUMNS = "p.email, p.first_name, p.last_name, p.language, p.time_zone, p.phone, p.attributes"


def _bound_cursor():
    """PostgreSQL: a cursor with server-side parameter binding on Django's connection (same
    transaction). Django's cursors bind on the client, quoting every value of a chunk's arrays into
    the SQL text (~40 µs a message); here the arrays travel as parameters and psycopg prepares the
    statement after a few runs. Behind PgBouncer, use session pooling (README, tracking)."""
    import psycopg

    connection.ensure_connection()
    return connection._prepare_cursor(psycopg.Cursor(connection.connection))  # Django's wrapper: query logging, capture


def _pick_sql() -> tuple[str, str]:
    table, deliveries = SendingLog._meta.db_table, Delivery._meta.db_table
    active = ", ".join(f"'{s.value}'" for s in ACTIVE)
    return (
        f"SELECT id FROM {table} WHERE delivery_id = %(d)s AND status = 'pending' AND id BETWEEN %(lo)s AND %(hi)s"
        f" AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s) AND (due_at IS NULL OR due_at <= %(now)s)"
        f" AND EXISTS (SELECT 1 FROM {deliveries} WHERE id = %(d)s AND state IN ({active})) ORDER BY id LIMIT %(limit)s",
        table,
    )


def _claim_postgresql(*, delivery, lo, hi, limit, now, token):
    pick, table = _pick_sql()
    params = {"d": delivery.pk, "lo": lo, "hi": hi, "now": now, "limit": limit, "token": token, "channel": delivery.channel}
    joins = left_joins_sql().replace("%s", "%(channel)s")
    # the sentence a skipped log shows, per cause, as parameters (in the worker's language)
    params |= {f"text_{cause}": _skipped_text(cause) for cause in ExclusionCause.values}
    skipped_texts = "CASE j.cause " + " ".join(f"WHEN '{c}' THEN %(text_{c})s" for c in ExclusionCause.values) + " END"
    sql = f"""
        WITH picked AS MATERIALIZED ({pick} FOR UPDATE OF {table} SKIP LOCKED),
        judged AS (
            SELECT s.id, {left_cause_sql(channel=delivery.channel)} AS cause, q.id IS NOT NULL AS known
            FROM picked JOIN {table} s ON s.id = picked.id {joins}
        ),
        claimed AS (
            UPDATE {table} t SET
                status = CASE WHEN j.cause IS NULL THEN 'sending' ELSE 'skipped' END,
                claimed_at = CASE WHEN j.cause IS NULL THEN %(now)s END,
                claim_token = CASE WHEN j.cause IS NULL THEN %(token)s END,
                exclusion_cause = COALESCE(j.cause, ''),
                failure_text = CASE WHEN j.cause IS NULL THEN t.failure_text ELSE {skipped_texts} END,
                event_at = CASE WHEN j.cause IS NULL THEN t.event_at ELSE %(now)s END,
                next_attempt_at = CASE WHEN j.cause IS NULL THEN t.next_attempt_at END,
                failure_type = CASE WHEN j.cause IS NULL THEN t.failure_type ELSE '' END,
                failure_reason = CASE WHEN j.cause IS NULL THEN t.failure_reason ELSE '' END
            FROM judged j WHERE t.id = j.id
            RETURNING t.id, t.address, t.attempts, t.profile_id, j.cause, j.known, t.due_at
        ),
        excluded AS (
            INSERT INTO {ExclusionLog._meta.db_table} (delivery_id, profile_id, address, cause, found_at)
            SELECT %(d)s, CASE WHEN cause = 'profile_deleted' THEN NULL ELSE profile_id END, address, cause, %(now)s
            FROM claimed WHERE cause IS NOT NULL
        ),
        counted AS (
            UPDATE {Delivery._meta.db_table} SET skipped_count = skipped_count + n.n, to_deliver_count = to_deliver_count - n.n
            FROM (SELECT COUNT(*) AS n FROM claimed WHERE cause IS NOT NULL) n WHERE id = %(d)s AND n.n > 0
        )
        SELECT c.id, c.address, c.attempts, c.known, c.due_at, {_PROFILE_COLUMNS}, c.cause
        FROM claimed c LEFT JOIN {Profile._meta.db_table} p ON p.id = c.profile_id ORDER BY c.id
    """
    with _bound_cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [r[:-1] for r in rows if not r[-1]]


def _claim_portable(*, delivery, lo, hi, limit, now, token):
    """SQLite serializes writers: the same steps as PostgreSQL's statement, in one transaction."""
    pick, table = _pick_sql()
    params = {"d": delivery.pk, "lo": lo, "hi": hi, "now": connection.ops.adapt_datetimefield_value(now), "limit": limit}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM ({pick}) picked", params)
        ids = [r[0] for r in cursor.fetchall()]
        if not ids:
            return []
        marks = ", ".join(["%s"] * len(ids))
        cursor.execute(
            f"SELECT s.id, s.address, s.attempts, s.profile_id, {left_cause_sql(channel=delivery.channel)}, q.id IS NOT NULL,"
            f" s.due_at, {_PROFILE_COLUMNS} FROM {table} s {left_joins_sql()} WHERE s.id IN ({marks}) ORDER BY s.id",
            [delivery.channel, *ids],
        )
        rows = cursor.fetchall()
        send = [r for r in rows if r[4] is None]
        gone = [r for r in rows if r[4] is not None]
        if send:
            SendingLog.objects.filter(id__in=[r[0] for r in send], status=SendingStatus.PENDING).update(
                status=SendingStatus.SENDING, claimed_at=now, claim_token=token
            )
        if gone:
            for cause in {r[4] for r in gone}:
                SendingLog.objects.filter(id__in=[r[0] for r in gone if r[4] == cause]).update(
                    status=SendingStatus.SKIPPED, exclusion_cause=cause, event_at=now, next_attempt_at=None,
                    failure_type="", failure_reason="", failure_text=_skipped_text(cause),
                )  # fmt: skip
            ExclusionLog.objects.bulk_create(
                [ExclusionLog(delivery_id=delivery.pk, profile_id=None if r[4] == ExclusionCause.PROFILE_DELETED else r[3],
                              address=r[1], cause=r[4], found_at=now) for r in gone]  # fmt: skip
            )
            Delivery.objects.filter(pk=delivery.pk).update(
                skipped_count=F("skipped_count") + len(gone), to_deliver_count=F("to_deliver_count") - len(gone)
            )
    return [(r[0], r[1], r[2], r[5], r[6], *r[7:]) for r in send]


# --- outcomes -----------------------------------------------------------------------------------
@dataclass(slots=True)
class Written:
    """What one outcome statement changed (only rows that still held their claim are counted)."""

    sent: int = 0
    failed: int = 0
    unknown: int = 0
    retry: int = 0
    state: str = ""


def outcome_row(*, row: Claimed, outcome: Outcome, now, validity_end) -> tuple:  # validity_end: the send's, or the row's own
    """(id, token, status, attempts, event_at, next_attempt_at, failure_type, failure_reason,
    failure_text, message_id) for one message's outcome (DOMAIN.md §4, §5)."""
    attempts = row.attempts + 1
    if outcome.ok:
        return (row.id, row.token, SendingStatus.SENT.value, attempts, now, None, "", "", "", row.message_id)
    if outcome.unknown:  # may have been delivered: final, never resent
        return (row.id, row.token, SendingStatus.UNKNOWN.value, attempts, now, None, "", "", outcome.text[:1000], row.message_id)
    next_at = now + backoff(attempts)
    if outcome.failure_type == FailureType.SOFT and next_at < validity_end:
        status, event_at = SendingStatus.PENDING.value, None
    else:
        status, event_at, next_at = SendingStatus.FAILED.value, now, None
    return (row.id, row.token, status, attempts, event_at, next_at, outcome.failure_type, outcome.failure_reason,
            outcome.text[:1000], row.message_id)  # fmt: skip


OUTCOME_COLUMNS = ("id", "token", "status", "attempts", "event_at", "next_attempt_at", "failure_type", "failure_reason",
                   "failure_text", "message_id")  # fmt: skip


def update_outcomes(*, delivery_id: int, rows: list[tuple]) -> Written:
    """Write outcomes in ONE statement: each log only while it still holds its claim token (a write
    after the reaper, or a second write, changes nothing), and the delivery's counters by what was
    really written. Returns the counts and the delivery's state (read in the same statement)."""
    if not rows:
        return Written(state=Delivery.objects.filter(pk=delivery_id).values_list("state", flat=True).first() or "")
    table, deliveries = SendingLog._meta.db_table, Delivery._meta.db_table
    if connection.vendor == "postgresql":
        columns = list(zip(*rows, strict=True))
        types = ("bigint", "bigint", "text", "int", "timestamptz", "timestamptz", "text", "text", "text", "text")
        unnest = ", ".join(f"%b::{t}[]" for t in types)  # binary arrays: no quoting of each value
        sql = f"""
            WITH v AS (SELECT * FROM unnest({unnest}) AS v({", ".join(OUTCOME_COLUMNS)})),
            written AS (
                UPDATE {table} t SET status = v.status, attempts = v.attempts, claimed_at = NULL, claim_token = NULL,
                    event_at = v.event_at, next_attempt_at = v.next_attempt_at, failure_type = v.failure_type,
                    failure_reason = v.failure_reason, failure_text = v.failure_text, message_id = v.message_id
                FROM v WHERE t.id = v.id AND t.claim_token = v.token AND t.status = 'sending'
                RETURNING t.status
            ),
            n AS (
                SELECT COUNT(*) FILTER (WHERE status = 'sent') AS sent, COUNT(*) FILTER (WHERE status = 'failed') AS failed,
                       COUNT(*) FILTER (WHERE status = 'unknown') AS unknown, COUNT(*) FILTER (WHERE status = 'pending') AS retry
                FROM written
            ),
            counted AS (
                UPDATE {deliveries} SET sent_count = sent_count + n.sent, failed_count = failed_count + n.failed,
                    processed_count = processed_count + n.sent + n.failed + n.unknown
                FROM n WHERE id = %s AND n.sent + n.failed + n.unknown > 0
                RETURNING state
            )
            SELECT n.sent, n.failed, n.unknown, n.retry,
                   COALESCE((SELECT state FROM counted), (SELECT state FROM {deliveries} WHERE id = %s))
            FROM n
        """
        with _bound_cursor() as cursor:
            cursor.execute(sql, [list(c) for c in columns] + [delivery_id, delivery_id])
            return Written(*cursor.fetchone())
    adapt = connection.ops.adapt_datetimefield_value
    placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    params = [v for r in rows for v in (*r[:4], adapt(r[4]), adapt(r[5]), *r[6:])]
    sql = (
        f"WITH v ({', '.join(OUTCOME_COLUMNS)}) AS (VALUES {placeholders}) "
        f"UPDATE {table} SET status = v.status, attempts = v.attempts, claimed_at = NULL, claim_token = NULL, "
        f"event_at = v.event_at, next_attempt_at = v.next_attempt_at, failure_type = v.failure_type, "
        f"failure_reason = v.failure_reason, failure_text = v.failure_text, message_id = v.message_id "
        f"FROM v WHERE {table}.id = v.id AND {table}.claim_token = v.token AND {table}.status = 'sending' "
        f"RETURNING {table}.status"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        counts = collections.Counter(r[0] for r in cursor.fetchall())
        written = Written(counts["sent"], counts["failed"], counts["unknown"], counts["pending"])
        if written.sent + written.failed + written.unknown:
            Delivery.objects.filter(pk=delivery_id).update(
                sent_count=F("sent_count") + written.sent,
                failed_count=F("failed_count") + written.failed,
                processed_count=F("processed_count") + written.sent + written.failed + written.unknown,
            )
        written.state = Delivery.objects.filter(pk=delivery_id).values_list("state", flat=True).first() or ""
    return written


def write_outcomes(*, delivery: Delivery, results: list[tuple[Claimed, Outcome]], now) -> Written:
    """Write a group of outcomes (one statement), then what follows from them: the journal line of
    messages in an unknown state, quarantine (only where something can change), the auto-pause."""
    start = delivery.started_at or now
    rows = [
        outcome_row(row=row, outcome=outcome, now=now, validity_end=(row.due_at or start) + delivery.validity)  # from its own time
        for row, outcome in results
    ]
    written = update_outcomes(delivery_id=delivery.pk, rows=rows)
    if written.unknown:
        journal_add(
            delivery=delivery.pk,
            level=JournalEntry.Level.WARNING,
            text=ngettext(
                "%(n)s message in an unknown state: the connection to the relay was lost after the message "
                "was sent, before its reply. It is not resent automatically.",
                "%(n)s messages in an unknown state: the connection to the relay was lost after the messages "
                "were sent, before their reply. They are not resent automatically.",
                written.unknown,
            )
            % {"n": _n(written.unknown)},
        )
    _quarantine(delivery=delivery, results=results, now=now)
    if written.failed:
        autopause_if_needed(delivery_id=delivery.pk, now=now)
    return written


def _quarantine(*, delivery, results, now) -> None:
    """A success changes only an address that has a quarantine row (the claim told which); a
    hard or soft failure about the address is recorded. No statement when nothing can change."""
    known_sent = [row.address for row, outcome in results if outcome.ok and row.known_address]
    if known_sent:
        quarantine_record_successes(addresses=known_sent, channel=delivery.channel, at=now)
    failures = [
        {"address": row.address, "channel": delivery.channel, "failure_type": outcome.failure_type,
         "reason": outcome.failure_reason, "text": outcome.text, "at": now}  # fmt: skip
        for row, outcome in results
        if not outcome.ok and not outcome.unknown and outcome.quarantine and outcome.failure_type in (FailureType.HARD, FailureType.SOFT)
    ]
    if failures:
        quarantine_record_failures(failures=failures)


def release_claimed(*, delivery_id: int, rows: list[Claimed], retry_at=None, why: str = "") -> int:
    """Give claimed rows that were not sent back: pending again (at `retry_at` when given, saying
    `why`), or cancelled when the send was stopped meanwhile. The delivery row is locked, so this
    and Stop see each other. Returns how many rows were released."""
    if not rows:
        return 0
    now = clock.now()
    with transaction.atomic():
        state = Delivery.objects.select_for_update().filter(pk=delivery_id).values_list("state", flat=True).first()
        mine = Q()
        for token in {r.token for r in rows}:
            mine |= Q(claim_token=token, id__in=[r.id for r in rows if r.token == token])
        logs = SendingLog.objects.filter(mine, status=SendingStatus.SENDING)
        if state == State.STOPPED:
            n = logs.update(status=SendingStatus.CANCELLED, claimed_at=None, claim_token=None, event_at=now, next_attempt_at=None)
            Delivery.objects.filter(pk=delivery_id).update(processed_count=F("processed_count") + n)
            return n
        changes = {"status": SendingStatus.PENDING, "claimed_at": None, "claim_token": None, "next_attempt_at": retry_at}
        if why:
            changes.update(failure_type=FailureType.SOFT, failure_reason=FailureReason.UNREACHABLE, failure_text=why[:1000])
        return logs.update(**changes)


def autopause_if_needed(*, delivery_id: int, now) -> bool:
    """Pause a send whose bounces + errors cross the hard limit (a broken list or a blocked sender
    stops before it burns the domain's reputation). One conditional UPDATE decides."""
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
                "Sending paused automatically: bounces + errors reached %(rate).1f%% of %(n)s processed messages "
                "(limit %(limit).0f%% after %(min)s). Check the list and the sender, then resume or stop."
            )
            % {"rate": d.failed_count * 100 / d.processed_count, "n": _n(d.processed_count),
               "limit": policy.autopause_bounce_rate * 100, "min": _n(policy.autopause_min_processed)},  # fmt: skip
        )
    return bool(paused)


# --- the batch ----------------------------------------------------------------------------------
class BatchRun:
    """One batch task's send: the connections (deliveries/connections.py), claims ahead, outcomes written in groups."""

    def __init__(self, *, delivery: Delivery, lo: int, hi: int):
        self.delivery = delivery
        self.lo, self.hi = lo, hi
        self.chunk = max(1, int(_setting("SEND_CHUNK", 200)))
        self.flush_seconds = float(_setting("SEND_FLUSH_SECONDS", 0.2))
        self.relay_down_seconds = float(_setting("SEND_RELAY_DOWN_SECONDS", 60))
        self.relay_retry_seconds = float(_setting("SEND_RELAY_RETRY_SECONDS", 60))
        self.db_patience = float(_setting("CLAIM_TIMEOUT_SECONDS", 600))
        # The batch ends itself well before the task's soft time limit (SEND_BATCH_TIME_LIMIT): it
        # stops claiming, finishes what it holds and writes it; the pass's end enqueues the rest.
        self.claim_until = time.monotonic() + 0.8 * float(_setting("SEND_BATCH_TIME_LIMIT", 3600))
        self.skeleton = skeleton_for(delivery)
        self.work = Work(low_water=max(self.chunk // 2, 1), group=self.chunk)
        self.unwritten = 0  # claimed rows whose outcome is not written yet (queued, in hand, or held)
        self.handled = 0
        self.rate_limited = False
        connections = max(1, int(_setting("SEND_CONNECTIONS", 16)))
        name = f"send-{delivery.pk}"
        if uses_smtp_relay():
            cap = max(1, int(_setting("SEND_MAX_CONNECTIONS_PER_RELAY", 50)))
            self.sender = AsyncSmtpSender(work=self.work, skeleton=self.skeleton, connections=connections, relay_cap=cap, name=name)
        else:
            self.sender = ThreadedSender(work=self.work, skeleton=self.skeleton, connections=connections, name=name)

    # -- the batch's thread --
    def _claim(self, now) -> list[Claimed] | None:
        limit = min(self.chunk, 2 * self.chunk - self.unwritten)
        if limit <= 0:
            return None
        if self.delivery.rate_limit_per_hour:  # rows claimed and not written yet count against the minute too
            limit = min(limit, rate_room(delivery=self.delivery, now=now, chunk_size=self.chunk) - self.unwritten)
            if limit <= 0:
                return [] if self.unwritten <= 0 else None
        return claim_chunk(delivery=self.delivery, lo=self.lo, hi=self.hi, limit=limit, now=now)

    def _write(self) -> str:
        with self.work.lock:
            results, self.work.results = self.work.results, []
        if not results:
            return ""
        try:
            written = write_outcomes(delivery=self.delivery, results=results, now=clock.now())
        except DB_ERRORS:
            with self.work.lock:  # keep them: written when the database is back
                self.work.results[:0] = results
            raise
        self.unwritten -= len(results)
        self.handled += len(results)
        return written.state

    def _release_queue(self, *, retry_at=None, why: str = "") -> int:
        with self.work.lock:
            rows = list(self.work.queue)
            self.work.queue.clear()
        self.work.close()
        released = release_claimed(delivery_id=self.delivery.pk, rows=rows, retry_at=retry_at, why=why)
        self.unwritten -= len(rows)
        return released

    def run(self) -> int:
        work = self.work
        self.sender.start()
        exhausted = False
        last_write = time.monotonic()
        try:
            while True:
                # 1. claim ahead, so the connections never wait for the database
                if not exhausted and self._claim_wanted(time.monotonic()):
                    try:
                        rows = self._claim(clock.now())
                    except DB_ERRORS as e:
                        self._db_failed(e)
                        rows = None
                    if rows is None:  # nothing may be claimed now (rate limit, database away): not before a moment
                        self._next_claim = time.monotonic() + 0.05
                    if rows == []:
                        exhausted = True
                        self.rate_limited = bool(self.delivery.rate_limit_per_hour) and self._budget_spent()
                        work.close()
                    elif rows:
                        self.claimed_once = True
                        self.unwritten += len(rows)
                        work.add(rows)
                # 2. wait for a group of outcomes, the flush time, or the queue running low
                with work.lock:
                    pending = len(work.results)
                    now = time.monotonic()
                    db_may = self._db_next_try is None or now >= self._db_next_try
                    write_now = db_may and (pending >= self.chunk or (pending and (exhausted or now - last_write >= self.flush_seconds)))
                    if not (write_now or (not exhausted and self._claim_wanted(now))):
                        wait = self.flush_seconds - (now - last_write) if pending else self.flush_seconds
                        work.wake.wait(max(0.005, min(wait, 0.1)))
                    pending = len(work.results)
                now = time.monotonic()
                db_may = self._db_next_try is None or now >= self._db_next_try
                # 3. write them in groups (or the last ones); while the database is away, keep them
                if pending and db_may and (pending >= self.chunk or now - last_write >= self.flush_seconds or exhausted):
                    try:
                        state = self._write()
                        last_write = time.monotonic()
                        self._db_back()
                        if state and state not in ACTIVE and not exhausted:
                            self._release_queue()  # paused or stopped: rows no connection took yet go back
                            exhausted = True
                    except DB_ERRORS as e:
                        self._db_failed(e)
                elif self._db_down_since is not None and db_may and not pending:
                    self._probe_db()
                # 4. the relay refused every connection for too long: hand the rows back for later
                if work.queue and work.live == 0 and self._db_down_since is None and now - work.last_ok > self.relay_down_seconds:
                    self._relay_down()
                    exhausted = True
                if self._db_down_since is not None and now - self._db_down_since > self.db_patience:
                    log.error("delivery %s: the database stayed unreachable %.0f s; %d outcomes not written (the reaper "
                              "marks them unknown)", self.delivery.pk, self.db_patience, self.unwritten)  # fmt: skip
                    break
                if not exhausted and self.claimed_once and now >= self.claim_until:  # this task's time is up: no new claim
                    exhausted = True
                    work.close()
                if exhausted and self.unwritten <= 0 and not work.queue:
                    break
        except SoftTimeLimitExceeded:  # a safety net (the batch ends itself before): keep what went out
            log.warning("delivery %s: the batch reached its time limit; writing what it holds", self.delivery.pk)
            self._release_queue()
            work.stopping.set()
            self.sender.join(timeout=30)
            try:
                self._write()
            except DB_ERRORS:
                log.error("delivery %s: %d outcomes could not be written (the reaper marks them unknown)", self.delivery.pk, self.unwritten)
        finally:
            work.stopping.set()
            work.close()
            self.sender.join(timeout=60)
        return self.handled

    _db_down_since: float | None = None
    _db_next_try: float | None = None
    _db_tries = 0
    _next_claim = 0.0
    claimed_once = False  # a batch always claims at least once, whatever its time budget

    def _claim_wanted(self, now: float) -> bool:
        """Claim the next chunk when the queue runs low, at most 2 x SEND_CHUNK claimed and not written."""
        return (
            self._db_down_since is None
            and now >= self._next_claim
            and (now < self.claim_until or not self.claimed_once)
            and len(self.work.queue) < self.work.low_water
            and self.unwritten < 2 * self.chunk
        )

    def _db_failed(self, error) -> None:
        """The database is away: outcomes stay in memory, claims wait, tries back off (up to 5 s)."""
        now = time.monotonic()
        if self._db_down_since is None:
            self._db_down_since = now
            log.warning("delivery %s: database unreachable (%s): outcomes kept in memory until it is back", self.delivery.pk, error)
        self._db_tries += 1
        self._db_next_try = now + min(5.0, 0.25 * 2**self._db_tries)
        try:
            connection.close()
        except DatabaseError:
            pass

    def _db_back(self) -> None:
        if self._db_down_since is not None:
            log.warning("delivery %s: database back after %.1f s", self.delivery.pk, time.monotonic() - self._db_down_since)
        self._db_down_since = self._db_next_try = None
        self._db_tries = 0

    def _probe_db(self) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            self._db_back()
        except DB_ERRORS as e:
            self._db_failed(e)

    def _budget_spent(self) -> bool:
        return rate_room(delivery=self.delivery, now=clock.now(), chunk_size=self.chunk) <= 0

    relay_released = 0
    relay_retry_at = None

    def _relay_down(self) -> None:
        """Hand the queued rows back (a row a connection still holds comes back to the queue and is
        handed back in turn); the journal says it once, when the batch ends."""
        if self.relay_retry_at is None:
            self.relay_retry_at = clock.now() + timedelta(seconds=self.relay_retry_seconds)
        why = _("Relay unreachable: %(error)s") % {"error": self.work.last_error or _("no connection could be opened")}
        self.relay_released += self._release_queue(retry_at=self.relay_retry_at, why=why)

    def journal_relay_down(self) -> None:
        if not self.relay_released:
            return
        journal_add(
            delivery=self.delivery.pk,
            level=JournalEntry.Level.WARNING,
            text=ngettext(
                "The mail relay could not be reached for %(s)d s (%(error)s): %(n)s message will be tried again from %(when)s.",
                "The mail relay could not be reached for %(s)d s (%(error)s): %(n)s messages will be tried again from %(when)s.",
                self.relay_released,
            )
            % {"s": self.relay_down_seconds, "error": self.work.last_error, "n": _n(self.relay_released),
               "when": f"{self.relay_retry_at:%Y-%m-%d %H:%M:%S} UTC"},  # fmt: skip
        )


def send_batch(*, delivery_id: int, lo: int, hi: int) -> int:
    """Send every due pending log of `delivery_id` with id in [lo, hi]. Returns how many messages
    this call handled. Safe to run twice at once (each row is claimed once)."""
    delivery = Delivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.state not in ACTIVE:
        if delivery is not None:
            batch_ended(delivery_id=delivery_id)
        return 0
    run = BatchRun(delivery=delivery, lo=lo, hi=hi)
    try:
        handled = run.run()
        run.journal_relay_down()
    finally:
        if run.rate_limited:  # the hour's budget is spent: come back when the window has moved
            dispatch_later(delivery_id=delivery_id, seconds=RATE_RETRY_SECONDS)
    batch_ended(delivery_id=delivery_id, close_pass=not run.rate_limited)
    return handled


RATE_RETRY_SECONDS = 10


def dispatch_later(*, delivery_id: int, seconds: float) -> None:
    queue.enqueue(queue.DISPATCH, delivery_id, countdown=seconds, what=f"the dispatch of delivery {delivery_id}")


def rate_room(*, delivery: Delivery, now, chunk_size: int) -> int:
    """How many messages may go now under the delivery's hourly limit, shared by every worker:
    the limit spread per minute, minus what was processed in the last minute (an index-only count
    over (delivery, event_at))."""
    per_minute = max(1, delivery.rate_limit_per_hour // 60)
    recent = SendingLog.objects.filter(delivery_id=delivery.pk, event_at__gt=now - timedelta(minutes=1)).count()
    return max(0, min(chunk_size, per_minute - recent))


# --- dispatch and the end of a pass -------------------------------------------------------------
def _due_q(now) -> Q:
    """Pending rows that may go now: not waiting for a retry, nor for their own send time."""
    return (
        Q(status=SendingStatus.PENDING)
        & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        & (Q(due_at__isnull=True) | Q(due_at__lte=now))
    )


MIN_BATCHES = 4  # a send of a few thousand still spreads over the worker processes


def dispatch(*, delivery_id: int) -> int:
    """Cut the due pending logs into id ranges (computed in SQL, never loaded) and enqueue one batch
    task per range. A send waiting for its retry time starts its retry pass here."""
    now = clock.now()
    d = Delivery.objects.filter(pk=delivery_id).first()
    if d is None:
        return 0
    due = SendingLog.objects.filter(_due_q(now), delivery_id=delivery_id)
    if d.state == State.RETRY_PENDING:
        n = due.count()
        if not n:
            return 0
        with transaction.atomic():
            if Delivery.objects.filter(pk=d.pk, state=State.RETRY_PENDING).update(
                state=State.RETRY_IN_PROGRESS, retry_passes=F("retry_passes") + 1
            ):
                passes = Delivery.objects.filter(pk=d.pk).values_list("retry_passes", flat=True).get()
                journal_add(
                    delivery=d,
                    text=ngettext("Retry pass %(pass)d started: %(n)s message to retry.", "Retry pass %(pass)d started: %(n)s messages to retry.", n)
                    % {"pass": passes, "n": _n(n)},
                )
        d.refresh_from_db()
    if d.state not in ACTIVE:
        return 0
    span = due.aggregate(lo=Min("id"), count=Count("id"))
    if not span["count"]:
        batch_ended(delivery_id=delivery_id, close_pass=True, opened=0)
        return 0
    hi = due.order_by("-id").values_list("id", flat=True).first()
    size = max(1, int(_setting("SEND_BATCH", 5000)))
    chunk = max(1, int(_setting("SEND_CHUNK", 200)))
    if d.rate_limit_per_hour:
        size = span["count"]  # one batch paces the whole send (it re-enqueues itself when the budget is spent)
        parts = 1
    else:  # big batches (a batch's start and end cost), but enough of them for several worker processes
        parts = max(-(-span["count"] // size), min(MIN_BATCHES, -(-span["count"] // chunk)))
    width = max(1, -(-(hi - span["lo"] + 1) // parts))
    ranges = [(lo, min(lo + width - 1, hi)) for lo in range(span["lo"], hi + 1, width)]
    Delivery.objects.filter(pk=delivery_id).update(batches_open=F("batches_open") + len(ranges))
    for lo, top in ranges:
        queue.enqueue(queue.SEND_BATCH, delivery_id, lo, top, what=f"a batch of delivery {delivery_id}")
    return len(ranges)


def batch_ended(*, delivery_id: int, close_pass: bool = True, opened: int = 1) -> str | None:
    """A batch task ended: one fewer open; the last to end closes the pass."""
    if opened:
        Delivery.objects.filter(pk=delivery_id).update(batches_open=Greatest(F("batches_open") - 1, Value(0)))
    if close_pass:
        return pass_end(delivery_id=delivery_id)
    return None


def pass_end(*, delivery_id: int, now=None) -> str | None:
    """After a batch: finished when every log is final; retry pending ONLY when every remaining log
    waits for a retry time (rows never tried, or due, are always being sent: by a batch still open,
    or one enqueued now; rows waiting for their own send time keep the send in progress). Each
    outcome is one conditional update of the state: said once."""
    now = now or clock.now()
    d = Delivery.objects.filter(pk=delivery_id).values("state", "batches_open", "sent_count", "failed_count").first()
    if d is None or d["state"] not in ACTIVE:
        return None
    logs = SendingLog.objects.filter(delivery_id=delivery_id)
    if logs.filter(status=SendingStatus.SENDING).exists():
        return None  # a batch is at work: it closes the pass when it ends
    if logs.filter(_due_q(now)).exists():
        if d["batches_open"] == 0:  # due rows and no batch left for them (a retry became due meanwhile, released rows)
            # a second later: a row locked by a transaction in flight must not make batches spin
            queue.enqueue(queue.DISPATCH, delivery_id, countdown=1, what=f"the dispatch of delivery {delivery_id}")
        return None
    if logs.filter(status=SendingStatus.PENDING, attempts=0, due_at__gt=now).exists():
        return None  # recipients wait for their own send time (a wave to come): the beat's tick wakes the send then
    waiting = logs.filter(status=SendingStatus.PENDING).aggregate(n=Count("id"), next_due=Min("next_attempt_at"))
    if waiting["n"]:
        next_due = waiting["next_due"]
        with transaction.atomic():
            if Delivery.objects.filter(pk=delivery_id, state__in=ACTIVE).update(state=State.RETRY_PENDING):
                journal_add(
                    delivery=delivery_id,
                    text=ngettext(
                        "Pass done: %(n)s message will be retried from %(when)s.",
                        "Pass done: %(n)s messages will be retried from %(when)s.",
                        waiting["n"],
                    )
                    % {"n": _n(waiting["n"]), "when": f"{next_due:%Y-%m-%d %H:%M:%S} UTC"},
                )
                countdown = max(0.0, (next_due - now).total_seconds())
                queue.enqueue(queue.DISPATCH, delivery_id, countdown=countdown, after_commit=True,
                              what=f"the retry pass of delivery {delivery_id}")  # fmt: skip
                return State.RETRY_PENDING
        return None
    all_failed = d["sent_count"] == 0 and d["failed_count"] > 0 and not logs.exclude(status__in=(SendingStatus.FAILED, SendingStatus.SKIPPED)).exists()
    target = State.FAILED if all_failed else State.FINISHED
    with transaction.atomic():
        if Delivery.objects.filter(pk=delivery_id, state__in=ACTIVE).update(state=target, finished_at=now, batches_open=0):
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


# The name earlier code and tests use for the end-of-pass check.
delivery_finish_if_done = pass_end


# --- the beat's minute --------------------------------------------------------------------------
def deliveries_expire(*, now=None) -> int:
    """Fail the pending logs whose validity period ended (DOMAIN.md §5: soft failures are retried
    until then; a send paused past it sends nothing more). The period runs from the send's start, or
    from a row's own send time (a send per recipient's time). One UPDATE per message, not per
    recipient; a log keeps the reason of its last soft failure. Returns how many logs failed."""
    now = now or clock.now()
    candidates = Delivery.objects.filter(state__in=(*ACTIVE, State.RETRY_PENDING, State.PAUSED), started_at__isnull=False)
    text = _("Not sent: the validity period of the send ended.")
    total = 0
    for delivery_id, state, validity, started_at in candidates.values_list("pk", "state", "validity", "started_at"):
        cutoff = now - validity
        if started_at > cutoff and not SendingLog.objects.filter(delivery_id=delivery_id, due_at__lte=cutoff).exists():
            continue
        ended = Q(due_at__lte=cutoff) | (Q(due_at__isnull=True) if started_at <= cutoff else Q(pk__in=[]))
        with transaction.atomic():
            n = (
                SendingLog.objects.filter(ended, delivery_id=delivery_id, status=SendingStatus.PENDING)
                .update(
                    status=SendingStatus.FAILED, event_at=now, next_attempt_at=None,
                    failure_type=Case(When(failure_type="", then=Value(FailureType.SOFT)), default=F("failure_type")),
                    failure_reason=Case(When(failure_reason="", then=Value(FailureReason.NOT_DEFINED)), default=F("failure_reason")),
                    failure_text=Case(When(failure_text="", then=Value(text)), default=F("failure_text"), output_field=TextField()),
                )
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
                    "%(n)s message not sent: the validity period (%(hours)s h) ended.",
                    "%(n)s messages not sent: the validity period (%(hours)s h) ended.",
                    n,
                )
                % {"n": _n(n), "hours": f"{validity.total_seconds() / 3600:g}"},
            )
        total += n
        if state != State.PAUSED:  # a paused send ends when it is resumed (nothing is left to send)
            pass_end(delivery_id=delivery_id, now=now)
    return total


def deliveries_reap(*, now=None) -> int:
    """Rows claimed longer than CLAIM_TIMEOUT_SECONDS had their worker die (a live worker writes
    within seconds, and keeps trying while the database is away): they become "unknown", never
    resent automatically, journaled with their count."""
    now = now or clock.now()
    claim_timeout = timedelta(seconds=int(_setting("CLAIM_TIMEOUT_SECONDS", 600)))
    stale = SendingLog.objects.filter(status=SendingStatus.SENDING, claimed_at__lt=now - claim_timeout)
    total = 0
    for delivery_id in stale.order_by().values_list("delivery_id", flat=True).distinct():
        with transaction.atomic():
            reaped = SendingLog.objects.filter(
                delivery_id=delivery_id, status=SendingStatus.SENDING, claimed_at__lt=now - claim_timeout
            ).update(status=SendingStatus.UNKNOWN, event_at=now, claimed_at=None, claim_token=None,
                     failure_text=_("Worker stopped while sending: the message may or may not have been sent."))  # fmt: skip
            if not reaped:
                continue
            Delivery.objects.filter(pk=delivery_id).update(processed_count=F("processed_count") + reaped)
            journal_add(
                delivery=delivery_id,
                level=JournalEntry.Level.WARNING,
                text=ngettext(
                    "%(n)s message in an unknown state: its worker stopped while sending. It is not resent automatically.",
                    "%(n)s messages in an unknown state: their worker stopped while sending. They are not resent automatically.",
                    reaped,
                )
                % {"n": _n(reaped)},
            )
        total += reaped
        pass_end(delivery_id=delivery_id, now=now)
    return total


def deliveries_reconcile(*, now=None) -> int:
    """A send in progress with due rows, nothing claimed and no outcome for RECONCILE_AFTER_SECONDS
    lost its tasks (a broker restarted without persistence, a worker killed): enqueue it again.
    Claims make a duplicate harmless; the quiet period keeps a long queue from being enqueued twice."""
    now = now or clock.now()
    quiet = now - timedelta(seconds=int(_setting("RECONCILE_AFTER_SECONDS", 300)))
    count = 0
    for d in Delivery.objects.filter(state__in=ACTIVE, started_at__lt=quiet).only("pk"):
        logs = SendingLog.objects.filter(delivery_id=d.pk)
        stalled = (
            logs.filter(_due_q(now)).exists()
            and not logs.filter(status=SendingStatus.SENDING).exists()
            and not logs.filter(event_at__gte=quiet).exists()
        )
        if stalled:
            with transaction.atomic():
                Delivery.objects.filter(pk=d.pk).update(batches_open=0)
                journal_add(delivery=d.pk, level=JournalEntry.Level.WARNING,
                            text=_("The send had stalled (its tasks were lost): it was enqueued again."))  # fmt: skip
            queue.enqueue(queue.DISPATCH, d.pk, what=f"the dispatch of delivery {d.pk}")  # committed already
            count += 1
    return count


def deliveries_tick(*, now=None) -> dict:
    """Beat, every SEND_TICK_SECONDS: start retry passes that are due, fail logs whose validity
    ended, reap claims whose worker died (-> unknown), wake sends whose next wave is due,
    re-dispatch stalled sends."""
    now = now or clock.now()
    report = {"retries": 0, "expired": deliveries_expire(now=now)}
    for pk in Delivery.objects.filter(state=State.RETRY_PENDING).values_list("pk", flat=True):
        if SendingLog.objects.filter(delivery_id=pk, status=SendingStatus.PENDING, next_attempt_at__lte=now).exists():
            queue.enqueue(queue.DISPATCH, pk, what=f"the retry pass of delivery {pk}")
            report["retries"] += 1
    report["reaped"] = deliveries_reap(now=now)
    report["waves"] = deliveries_wake(now=now)
    report["redispatched"] = deliveries_reconcile(now=now)
    return report


def deliveries_wake(*, now=None) -> int:
    """A send in progress with no batch open whose next recipients' time has come (a wave of a send
    per recipient's time, rows handed back when the relay was away): enqueue it."""
    now = now or clock.now()
    woken = 0
    for pk in Delivery.objects.filter(state__in=ACTIVE, batches_open=0).values_list("pk", flat=True):
        logs = SendingLog.objects.filter(delivery_id=pk)
        if logs.filter(_due_q(now)).exists() and not logs.filter(status=SendingStatus.SENDING).exists():
            queue.enqueue(queue.DISPATCH, pk, what=f"the dispatch of delivery {pk}")
            woken += 1
    return woken


__all__ = [
    "Claimed",
    "claim_chunk",
    "dispatch",
    "pass_end",
    "send_batch",
    "write_outcomes",
]
