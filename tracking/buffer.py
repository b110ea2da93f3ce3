"""Open and click hits held in the web process and written to PostgreSQL in bulk.

Why: a hit written by its own transaction costs PostgreSQL more CPU than a whole bare request
costs the web server, so the pixel and the click redirect could not keep up with their traffic
(bench/tracking). Here the request only checks the signed token, notes the hit in memory and
answers; a thread of each web process writes what it holds every TRACKING_BUFFER_SECONDS (or as
soon as TRACKING_BUFFER_ROWS are held) with a few set-based statements:

1. insert the tracking logs of every hit whose sending log exists (and belongs to the link's
   message), flagging machine traffic by the one rule of tracking/machine.py (the user agent
   judged in the request, the timing here against the log's delivery time); it returns the logs whose first human open / click
   this batch moves earlier;
2. lock those logs in id order, so the buffers of several processes wait for each other instead
   of deadlocking, and set their first human times to the earliest human hit (LEAST: hits of
   several processes written out of order still agree);
3. once that is committed, when the batch had clicks: find the bursts (TRACKING_BURST_LINKS
   distinct links of one message clicked within TRACKING_BURST_SECONDS; the flush committed last
   sees the clicks every process wrote), lock those logs in id order, flag their clicks as machine
   traffic and recompute the logs' first human times from what is left. A process killed between the two transactions
   leaves its burst unflagged (the clicks are recorded as a person's).

The trade-off (README, "Tracking"): a hit is in the database TRACKING_BUFFER_SECONDS after its
answer instead of before. A graceful stop of the process (gunicorn's restart, SIGTERM, Ctrl-C)
writes what is held first; a killed process (SIGKILL, out of memory) loses at most the hits of
its last interval. While the database is unreachable the hits are kept and written once it is
back, up to TRACKING_BUFFER_LIMIT rows per process; hits beyond that are counted, logged and
dropped (the pixel is still answered). A batch is written whole or not at all, and written once:
when the connection drops during its commit, PostgreSQL is asked whether it committed
(pg_xact_status) before it is written again; a row the database refuses is dropped alone (the batch
is written in halves). TRACKING_BUFFER_SECONDS=0 writes every hit before
answering (one statement per hit, services.tracking_open / tracking_click).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import psycopg
from django.conf import settings
from django.core.signals import setting_changed
from django.db import connection, transaction
from django.db.utils import DatabaseError, DataError, IntegrityError

from deliveries.models import SendingLog, TrackedUrl
from tracking.machine import burst_reason, reason_sql, rule_params
from tracking.models import TrackingLog
from tracking.services import UA_MAX, agent_reason_cached, first_times_recompute, ip_hash

logger = logging.getLogger(__name__)

K = TrackingLog.Kind
_LOG = SendingLog._meta.db_table
_TRK = TrackingLog._meta.db_table
_URL = TrackedUrl._meta.db_table
CHUNK = 5000  # rows per INSERT statement (a long outage can leave many rows to write)


class BufferedHit(NamedTuple):
    """One hit as written (a tuple: the flush builds thousands)."""

    at: datetime
    log_id: int
    kind: str  # TrackingLog.Kind.OPEN or CLICK
    url_id: int | None
    url_delivery_id: int | None  # the link's message: the log must belong to it
    user_agent: str
    ip_hash: str
    agent_reason: str  # "" unless the user agent is a known machine's


# One statement: read each hit's sending log, apply the timing rule, insert the tracking logs, and
# return, for the logs whose first human open / click this batch moves earlier, the batch's times.
_WRITE = f"""
WITH h AS (
    SELECT * FROM unnest(%(at)b::timestamptz[], %(log)b::bigint[], %(kind)b::text[], %(url)b::bigint[],
                         %(url_delivery)b::bigint[], %(ua)b::text[], %(ip)b::text[], %(agent)b::text[])
         AS h(at, log_id, kind, url_id, url_delivery_id, ua, ip_hash, agent_reason)
), x AS (
    SELECT h.*, l.delivery_id, l.first_open_at, l.first_click_at,
           {reason_sql(agent="h.agent_reason", event_at="l.event_at", status="l.status", at="h.at")} AS reason
    FROM h JOIN (SELECT * FROM {_LOG} WHERE id = ANY(%(log)b::bigint[])) l ON l.id = h.log_id  -- index lookups, whatever the statistics
    WHERE h.url_delivery_id IS NULL
       OR (h.url_delivery_id = l.delivery_id AND EXISTS (SELECT 1 FROM {_URL} u WHERE u.id = h.url_id))
), ins AS (
    INSERT INTO {_TRK} (at, delivery_id, sending_log_id, kind, tracked_url_id, user_agent, ip_hash, is_machine, machine_reason)
    SELECT at, delivery_id, log_id, kind, url_id, ua, ip_hash, reason <> '', reason FROM x
    RETURNING 1
), firsts AS (
    SELECT log_id, min(at) AS opened, min(at) FILTER (WHERE kind = %(click)s) AS clicked,
           min(first_open_at) AS first_open_at, min(first_click_at) AS first_click_at
    FROM x WHERE reason = '' GROUP BY log_id
)
SELECT (SELECT count(*) FROM ins), pg_current_xact_id()::text, NULL::bigint, NULL::timestamptz, NULL::timestamptz
UNION ALL
SELECT NULL, NULL, log_id, opened, clicked FROM firsts
WHERE first_open_at IS NULL OR first_open_at > opened
   OR (clicked IS NOT NULL AND (first_click_at IS NULL OR first_click_at > clicked))
"""

# The logs whose first times change are locked in id order first, so the buffers of several
# processes wait for each other instead of deadlocking.
_LOCK = f"SELECT id FROM {_LOG} WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE"

# The first human times, moved earlier only (re-checked under the lock).
_FIRSTS = f"""
UPDATE {_LOG} AS s
SET first_open_at = LEAST(s.first_open_at, f.opened), first_click_at = LEAST(s.first_click_at, f.clicked)
FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[]) AS f(log_id, opened, clicked)
WHERE s.id = f.log_id
  AND (s.first_open_at IS NULL OR s.first_open_at > f.opened
       OR (f.clicked IS NOT NULL AND (s.first_click_at IS NULL OR s.first_click_at > f.clicked)))
"""

# The bursts around this batch's clicks: a click that starts a window of TRACKING_BURST_SECONDS
# holding TRACKING_BURST_LINKS or more distinct links of its message; every person's click in such
# a window is flagged. Windows are looked for from `since` (the batch's earliest click minus the
# window), so clicks written earlier by another process count too.
_STARTS = f"""
SELECT s.sending_log_id AS log_id, s.at AS start
FROM {_TRK} s
WHERE s.sending_log_id = ANY(%(logs)s) AND s.kind = %(click)s AND s.at >= %(since)s
  AND (SELECT count(DISTINCT t.tracked_url_id) FROM {_TRK} t
       WHERE t.sending_log_id = s.sending_log_id AND t.kind = %(click)s AND t.at >= s.at AND t.at <= s.at + %(window)s
      ) >= %(links)s
"""
_BURST_LOGS = f"SELECT DISTINCT log_id FROM ({_STARTS}) AS starts"
_BURSTS = f"""
WITH starts AS ({_STARTS}), flagged AS (
    UPDATE {_TRK} AS t SET is_machine = true, machine_reason = %(reason)s
    FROM starts
    WHERE t.sending_log_id = starts.log_id AND t.kind = %(click)s AND NOT t.is_machine
      AND t.at >= starts.start AND t.at <= starts.start + %(window)s
    RETURNING t.sending_log_id
)
SELECT DISTINCT sending_log_id FROM flagged
"""


class CommitUnknown(Exception):
    """The connection was lost while a batch was being committed and PostgreSQL could not be asked
    whether it was: the batch is kept with its transaction id and looked up before writing it again."""

    def __init__(self, xid: str):
        super().__init__(f"outcome of transaction {xid} unknown")
        self.xid = xid


def transaction_committed(xid: str, *, wait: float = 10.0) -> bool | None:
    """Whether the transaction `xid` committed (pg_xact_status, asked on a fresh connection):
    True, False, or None when PostgreSQL cannot say (unreachable, or the transaction still running
    after `wait` seconds). Raises nothing."""
    connection.close()
    deadline = time.monotonic() + wait
    try:
        while True:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_xact_status(%s::xid8)", [xid])
                status = cursor.fetchone()[0]
            if status != "in progress":
                return status == "committed"
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)
    except DatabaseError:
        connection.close()
        return None


@contextmanager
def _prepared_cursor():
    """A psycopg cursor with server-side parameters and prepared statements: the arrays travel as
    parameters instead of being spelled into the SQL (Django's client-side binding), and each
    statement is planned once per connection instead of at every flush. Errors are Django's."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield _Prepared(cursor)


class _Prepared:
    def __init__(self, cursor):
        self.cursor = cursor

    def execute(self, sql, params):
        return self.cursor.execute(sql, params, prepare=True)

    def fetchall(self):
        return self.cursor.fetchall()


def hits_write(hits: list[BufferedHit]) -> int:
    """Write buffered hits in one transaction (PostgreSQL); returns the tracking logs inserted.

    Hits whose sending log does not exist (or is not of the link's message, or whose link is gone)
    write nothing. On an error nothing is written, and it is raised; when the connection is lost
    during the commit itself, PostgreSQL is asked whether the transaction committed (then the
    batch counts as written) and CommitUnknown is raised when it cannot say.
    """
    if not hits:
        return 0
    done = {"written": 0, "xid": None}
    try:
        _write(hits, done)
    except (DatabaseError, psycopg.Error) as error:
        if done["xid"] is None or isinstance(error, IntegrityError | DataError):
            raise  # refused or never reached the commit: nothing was written
        committed = transaction_committed(done["xid"])
        if committed is None:
            raise CommitUnknown(done["xid"]) from error
        if not committed:
            raise
        logger.warning("tracking buffer: the connection was lost at commit, but the batch was written")
    clicks = [h for h in hits if h.kind == K.CLICK]
    if clicks:
        # After the commit: whichever of several processes' flushes commits last sees the clicks
        # of all of them, so a burst split across processes is found.
        try:
            bursts_flag(clicks)
        except DatabaseError:  # the clicks are written: they are not written again
            logger.exception("tracking buffer: looking for bursts among %s clicks failed", len(clicks))
            connection.close()
    return done["written"]


def _write(hits: list[BufferedHit], done: dict) -> None:
    firsts: dict[int, tuple[datetime, datetime | None]] = {}  # log -> the batch's earliest (open, click)
    with transaction.atomic(), _prepared_cursor() as cursor:
        for start in range(0, len(hits), CHUNK):
            at, log, kind, url, url_delivery, ua, ip, agent = (
                list(column) for column in zip(*hits[start : start + CHUNK], strict=True)
            )
            cursor.execute(
                _WRITE,
                {
                    "at": at,
                    "log": log,
                    "kind": kind,
                    "url": url,
                    "url_delivery": url_delivery,
                    "ua": ua,
                    "ip": ip,
                    "agent": agent,
                    **rule_params(),
                    "click": K.CLICK,
                },
            )
            # The count row (with the transaction id), then one row per log whose times may move.
            for count, xid, log_id, opened, clicked in cursor.fetchall():
                if count is not None:
                    done["written"] += count
                    done["xid"] = xid
                    continue
                if log_id in firsts:  # the same log in several chunks: the earliest of each
                    was_opened, was_clicked = firsts[log_id]
                    opened = min(opened, was_opened)
                    clicked = min(filter(None, (clicked, was_clicked)), default=None)
                firsts[log_id] = (opened, clicked)
        if firsts:
            ids = sorted(firsts)
            cursor.execute(_LOCK, [ids])
            cursor.execute(_FIRSTS, [ids, [firsts[i][0] for i in ids], [firsts[i][1] for i in ids]])


def bursts_flag(clicks: list[BufferedHit]) -> list[int]:
    """Flag the bursts the written `clicks` took part in; returns the sending logs changed.

    Looked for first without locking anything (most batches have none); the logs that have one are
    then locked in id order (as the first-time writes lock them), so the flags and the recomputed
    first times are worked out from what every other process has committed."""
    window = timedelta(seconds=settings.TRACKING_BURST_SECONDS)
    params = {
        "logs": sorted({h.log_id for h in clicks}),
        "click": K.CLICK,
        "since": min(h.at for h in clicks) - window,
        "window": window,
        "links": settings.TRACKING_BURST_LINKS,
        "reason": burst_reason(),
    }
    with transaction.atomic(), _prepared_cursor() as cursor:
        cursor.execute(_BURST_LOGS, params)
        candidates = sorted(row[0] for row in cursor.fetchall())
        if not candidates:
            return []
        cursor.execute(_LOCK, [candidates])
        cursor.execute(_BURSTS, {**params, "logs": candidates})
        flagged = [row[0] for row in cursor.fetchall()]
        if flagged:
            first_times_recompute(log_ids=flagged)
    return flagged


# What a request notes: (time.time(), sending log id, kind, tracked URL id, the link's message id,
# user agent, IP). The rest is worked out here, a batch at a time (hits_from_noted).
Noted = tuple[float, int, str, int | None, int | None, str, str]


def hits_from_noted(noted: list[Noted]) -> list[BufferedHit]:
    """The hits to write: their times, keyed IP hashes and user-agent machine rule."""
    hits = []
    for at, log_id, kind, url_id, url_delivery_id, user_agent, ip in noted:
        ua = user_agent.replace("\x00", "")[:UA_MAX]  # PostgreSQL text holds no NUL
        hits.append(
            BufferedHit(
                datetime.fromtimestamp(at, UTC),
                log_id,
                kind,
                url_id,
                url_delivery_id,
                ua,
                ip_hash(ip),
                agent_reason_cached(ua),
            )
        )
    return hits


def _write_isolating(hits: list[BufferedHit]) -> tuple[int, list[BufferedHit], list[tuple[str, list[BufferedHit]]]]:
    """hits_write; when the database refuses a row (a constraint, a value: not a lost connection),
    the batch is written in halves, so only the refused hits are dropped (and logged).

    Returns (tracking logs written, hits to write again, batches whose commit is in doubt with
    their transaction ids): a half already committed is never written again."""
    try:
        return hits_write(hits), [], []
    except CommitUnknown as doubt:
        logger.error("tracking buffer: %s hits: %s; looked up before they are written again", len(hits), doubt)
        return 0, [], [(doubt.xid, hits)]
    except (IntegrityError, DataError):
        if len(hits) == 1:
            logger.exception("tracking buffer: the database refused this hit; dropped: %r", hits[0])
            return 0, [], []
        middle = len(hits) // 2
        first, second = _write_isolating(hits[:middle]), _write_isolating(hits[middle:])
        return first[0] + second[0], first[1] + second[1], first[2] + second[2]
    except DatabaseError:
        logger.exception("tracking buffer: writing %s hits failed; kept for the next try", len(hits))
        connection.close()  # the next try starts on a fresh connection
        return 0, hits, []


class HitBuffer:
    """The hits of one process, written by a background thread (see the module docstring).

    `background=False` starts no thread: the owner calls flush() (tests, management commands).
    """

    def __init__(self, *, interval: float, rows: int, limit: int, background: bool = True):
        self.interval, self.rows, self.limit, self.background = interval, rows, limit, background
        self._held: list[Noted] = []  # noted by requests, not tried yet
        self._retry: list[BufferedHit] = []  # tried, not written (the database was unreachable)
        self._doubtful: list[tuple[str, list[BufferedHit]]] = []  # commit outcome unknown, by transaction id
        self._lock = threading.Lock()  # guards the three lists
        self._writing = threading.Lock()  # one write at a time (the thread, or a flush at exit)
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self.dropped = 0

    def add(self, hit: Noted) -> None:
        if self._pid != os.getpid():  # first hit of this process (also after a fork)
            self._start()
        with self._lock:
            if self._count() >= self.limit:
                self._drop(1)
                return
            self._held.append(hit)
            full = len(self._held) >= self.rows
        if self._stopping:  # stopped (the process is ending): nobody flushes later
            self.flush()
        elif full:
            self._wake.set()

    def held(self) -> int:
        """Hits not written yet."""
        with self._lock:
            return self._count()

    def _count(self) -> int:
        return len(self._held) + len(self._retry) + sum(len(batch) for _xid, batch in self._doubtful)

    def _drop(self, n: int) -> None:
        self.dropped += n
        logger.error(
            "tracking buffer full (%s hits held, the database is not taking them): %s hits dropped so far",
            self._count(), self.dropped,
        )  # fmt: skip

    def flush(self) -> int:
        """Write everything held now; what the database could not take is kept for the next try.
        Returns the tracking logs written."""
        with self._writing:
            with self._lock:
                noted, self._held = self._held, []
                retry, self._retry = self._retry, []
                doubtful, self._doubtful = self._doubtful, []
            if not (noted or retry or doubtful):
                return 0
            hits, still_doubtful = retry, []
            for xid, batch in doubtful:
                committed = transaction_committed(xid, wait=0)
                if committed is None:
                    still_doubtful.append((xid, batch))
                elif not committed:
                    hits = hits + batch
            try:
                hits = hits + hits_from_noted(noted)
            except Exception:  # a bug in preparing them: keep them rather than lose them
                logger.exception("tracking buffer: preparing %s hits failed; kept", len(noted))
                with self._lock:
                    self._held[:0] = noted
                noted = []
            written, again, in_doubt = _write_isolating(hits) if hits else (0, [], [])
            with self._lock:  # back in front, oldest first, within the limit
                room = max(0, self.limit - self._count())
                kept = [*still_doubtful, *in_doubt]
                self._doubtful[:0] = kept
                self._retry[:0] = again[:room]
                if len(again) > room:
                    self._drop(len(again) - room)
            return written

    def stop(self) -> int:
        """Stop the thread and write what is held (a graceful exit); returns the tracking logs written."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if self._pid != os.getpid():
            return 0
        written = self.flush()
        left = self.held()
        if left:
            logger.error("tracking buffer: %s hits could not be written before stopping; they are lost", left)
        return written

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._held, self._retry, self._doubtful, self.dropped = [], [], [], 0  # a forked child starts empty
            if self.background:
                thread = threading.Thread(target=self._run, name="tracking-buffer", daemon=True)
                thread.start()  # may raise: then the next hit tries again
                self._thread = thread
                atexit.register(self._at_exit)
            self._pid = os.getpid()

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._wake.wait(self.interval)
                self._wake.clear()
                try:
                    self.flush()
                except Exception:  # never let the writer thread die
                    logger.exception("tracking buffer: unexpected error")
        finally:
            connection.close()  # the thread's own connection

    def _at_exit(self) -> None:
        if self._pid == os.getpid() and not self._stopping:
            written = self.stop()
            connection.close()
            if written:
                logger.info("tracking buffer: %s hits written at exit", written)


_buffer: HitBuffer | None = None
_buffer_lock = threading.Lock()


def hit_buffer() -> HitBuffer | None:
    """This process's buffer, or None when hits are written one by one (TRACKING_BUFFER_SECONDS=0,
    or a database other than PostgreSQL)."""
    global _buffer
    if _buffer is None:
        with _buffer_lock:
            if _buffer is None:
                if settings.TRACKING_BUFFER_SECONDS <= 0 or connection.vendor != "postgresql":
                    return None
                _buffer = HitBuffer(
                    interval=settings.TRACKING_BUFFER_SECONDS,
                    rows=settings.TRACKING_BUFFER_ROWS,
                    limit=settings.TRACKING_BUFFER_LIMIT,
                )
    return _buffer


def hit_buffer_stop() -> int:
    """Stop this process's buffer, writing what it holds; the next hit starts a new one."""
    global _buffer
    with _buffer_lock:
        buffer, _buffer = _buffer, None
    return buffer.stop() if buffer is not None else 0


def _settings_changed(*, setting, **kwargs) -> None:
    if setting.startswith("TRACKING_BUFFER_") or setting == "DATABASES":
        hit_buffer_stop()


setting_changed.connect(_settings_changed)


def _forget_in_child() -> None:
    """A forked child starts its own buffer (its parent writes what it holds)."""
    global _buffer, _buffer_lock
    _buffer, _buffer_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
