"""Connection slots per relay, shared by every worker process on every machine.

A relay accepts a limited number of connections from us (SEND_MAX_CONNECTIONS_PER_RELAY). Each
SMTP connection holds a slot for its lifetime: on PostgreSQL a session-level advisory lock
(pg_try_advisory_lock(relay, slot)) taken on one small connection per worker process; elsewhere (the
embedded SQLite default, one machine) an flock on a file per slot under VAR_DIR. Both are released
by the system when the process dies, so a crashed worker never keeps its slots.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import threading
import zlib
from pathlib import Path

from django.conf import settings
from django.db import connections

log = logging.getLogger(__name__)


def _relay_key(relay: str) -> int:
    return zlib.crc32(f"dispatch.relay:{relay}".encode()) - 2**31  # a signed int4 for the lock's first key


class _AdvisorySlots:
    """PostgreSQL: one connection of this process, shared by its threads under a lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self._conn = None
        self._pid = None
        self._mine: set[tuple[int, int]] = set()  # (relay key, slot) held by this process (the lock is re-entrant)

    def _cursor(self):
        if self._conn is None or self._pid != os.getpid():
            self._conn = connections.create_connection("default")
            self._conn.inc_thread_sharing()
            self._pid = os.getpid()
        return self._conn.cursor()

    def _reset(self):
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:  # noqa: S110 - a broken connection: dropping it is all we want
            pass
        self._conn = None
        self._mine.clear()  # the session's locks ended with it

    def acquire(self, relay: str, cap: int) -> int | None:
        key = _relay_key(relay)
        start = random.randrange(cap)  # spread processes over the slots: fewer failed tries
        with self._lock:
            mine = [slot for k, slot in self._mine if k == key]
            try:
                with self._cursor() as cursor:
                    # A session's advisory locks are re-entrant: skip the slots this process holds.
                    cursor.execute(
                        "SELECT s FROM (SELECT (g + %s) %% %s AS s FROM generate_series(0, %s - 1) g) x"
                        " WHERE NOT (s = ANY(%s)) AND pg_try_advisory_lock(%s, s) LIMIT 1",
                        [start, cap, cap, mine, key],
                    )
                    row = cursor.fetchone()
            except Exception as e:  # the database is away: go on without a slot (the cap is best effort then)
                log.warning("relay slots: cannot reach the database (%s); connecting without a slot", e)
                self._reset()
                return -1
            if row is None:
                if not self._mine:
                    self._reset()
                return None
            self._mine.add((key, int(row[0])))
            return int(row[0])

    def release(self, relay: str, slot: int) -> None:
        if slot < 0:
            return
        key = _relay_key(relay)
        with self._lock:
            self._mine.discard((key, slot))
            try:
                if not self._mine:
                    self._reset()  # ending the session releases the lock (no idle session between sends)
                    return
                with self._cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [key, slot])
            except Exception:  # the session ended with the database: its locks went with it
                self._reset()
                self._mine.clear()


class _FileSlots:
    """One machine: an flock per slot file (released by the kernel when the process dies)."""

    def __init__(self):
        self._held: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def _path(self, relay: str, slot: int) -> Path:
        folder = Path(settings.VAR_DIR) / "relay-slots"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{_relay_key(relay) & 0xFFFFFFFF:08x}-{slot}.lock"

    def acquire(self, relay: str, cap: int) -> int | None:
        start = random.randrange(cap)
        with self._lock:
            for i in range(cap):
                slot = (start + i) % cap
                if (relay, slot) in self._held:
                    continue
                fd = os.open(self._path(relay, slot), os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                self._held[(relay, slot)] = fd
                return slot
        return None

    def release(self, relay: str, slot: int) -> None:
        with self._lock:
            fd = self._held.pop((relay, slot), None)
        if fd is not None:
            os.close(fd)  # closing the descriptor drops its lock


_slots = None
_slots_lock = threading.Lock()


def relay_slots():
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = _AdvisorySlots() if connections["default"].vendor == "postgresql" else _FileSlots()
        return _slots
