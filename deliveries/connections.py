"""The connections of one batch: they take claimed rows, render them, send them, give outcomes back.

- `AsyncSmtpSender` (the fast path, Django's SMTP backend settings): ONE thread running an asyncio
  loop with `SEND_CONNECTIONS` relay connections, each a coroutine; rendering runs in that loop
  between network waits. Measured on this machine against a relay 10 ms away, 25 connections: a
  thread per connection cost ~80-100 µs of CPU per message for the SMTP exchange (GIL hand-offs,
  futex calls), coroutines ~55-60 µs.
- `ThreadedSender` (every other Django mail backend: console, locmem, django-anymail's provider
  APIs, all blocking): a thread per connection.

Both share `Work`, the batch's queue of claimed rows and list of outcomes, with the batch's own
thread, which claims ahead and writes outcomes (deliveries/sending.py). A relay that refuses a
connection (421, too many connections, refused, unreachable) makes that connection wait and retry
with backoff while the others go on: fewer connections, never a failed message. Each relay
connection holds a slot (deliveries/slots.py): at most SEND_MAX_CONNECTIONS_PER_RELAY across every
worker process.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time

from .channels.base import Outcome
from .channels.email import transport_for
from .channels.smtp import AsyncRelayClient, RelayConfig, RelayRefusedUs, RelayUnavailable, unknown_outcome
from .models import FailureReason, FailureType
from .slots import relay_slots

log = logging.getLogger(__name__)


class Work:
    """The claimed rows of one batch and their outcomes. One lock, two conditions: senders wait
    for rows (threads) or are woken (the loop), the batch's thread waits for a group of outcomes or
    for the queue to run low (to claim ahead)."""

    def __init__(self, *, low_water: int, group: int):
        self.lock = threading.Lock()
        self.rows = threading.Condition(self.lock)
        self.wake = threading.Condition(self.lock)
        self.queue: collections.deque = collections.deque()
        self.results: list[tuple[object, Outcome]] = []
        self.low_water, self.group = low_water, group
        self.closed = False  # no more rows will be added: senders end when the queue is empty
        self.stopping = threading.Event()
        self.live = 0  # connections open now
        self.last_ok = time.monotonic()  # last time a connection opened or a message went through
        self.last_error = ""  # the relay's last refusal, for the journal
        self.listeners: list = []  # called (outside the lock) when rows arrive or the work closes

    def pop(self):
        """The next row, or None (queue empty). Never blocks."""
        with self.lock:
            if not self.queue:
                return None
            row = self.queue.popleft()
            if len(self.queue) == self.low_water:
                self.wake.notify()  # time to claim ahead
            return row

    def take(self):
        """The next row; waits for one. None when the work is closed (or stopping) and empty."""
        with self.lock:
            while not self.queue:
                if self.closed or self.stopping.is_set():
                    return None
                self.rows.wait(0.5)
            row = self.queue.popleft()
            if len(self.queue) == self.low_water:
                self.wake.notify()
            return row

    @property
    def finished(self) -> bool:
        return (self.closed or self.stopping.is_set()) and not self.queue

    def add(self, rows: list) -> None:
        with self.lock:
            self.queue.extend(rows)
            self.rows.notify(len(rows))
        self._tell()

    def put_back(self, row) -> None:
        with self.lock:
            self.queue.appendleft(row)
            self.rows.notify()
        self._tell()

    def done(self, row, outcome: Outcome) -> None:
        with self.lock:
            self.results.append((row, outcome))
            if len(self.results) == self.group:
                self.wake.notify()  # a group to write

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.rows.notify_all()
            self.wake.notify_all()
        self._tell()

    def opened(self) -> None:
        with self.lock:
            self.live += 1
            self.last_ok = time.monotonic()

    def lost(self) -> None:
        with self.lock:
            self.live -= 1

    def _tell(self) -> None:
        for listener in self.listeners:
            listener()


def _backoff(failures: int) -> float:
    return min(10.0, 0.25 * 2**failures) * (0.5 + random.random())


def _personalization_failed(error: Exception) -> Outcome:
    return Outcome(ok=False, code=0, failure_type=FailureType.HARD, failure_reason=FailureReason.NOT_DEFINED,
                   text=f"Personalization failed for this recipient: {type(error).__name__}: {error}", quarantine=False)  # fmt: skip


def _build(skeleton, row):
    message = skeleton.build(sending_log_id=row.id, address=row.address, profile=row.profile)
    row.message_id = message.message_id
    return message


class AsyncSmtpSender:
    """`connections` relay connections as coroutines of one event loop, in one thread."""

    def __init__(self, *, work: Work, skeleton, connections: int, relay_cap: int, name: str):
        self.work, self.skeleton = work, skeleton
        self.connections, self.relay_cap = connections, relay_cap
        self.relay = RelayConfig.from_settings()
        self.slots = relay_slots()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None
        self.ready = threading.Event()

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(10)
        self.work.listeners.append(self._wake)

    def join(self, timeout: float) -> None:
        self._wake()
        self.thread.join(timeout)

    def _wake(self) -> None:
        loop, event = self.loop, self.event
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop just closed
                pass

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception:
            log.exception("send: the connections' event loop failed")
            self.ready.set()

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.ready.set()
        await asyncio.gather(*(self._connection(i) for i in range(self.connections)))

    async def _next(self):
        work = self.work
        while True:
            row = work.pop()
            if row is not None or work.finished:
                return row
            self.event.clear()
            if work.queue or work.finished:
                continue
            try:
                async with asyncio.timeout(0.5):
                    await self.event.wait()
            except TimeoutError:
                pass

    async def _sleep(self, seconds: float) -> None:
        """Wait, but not past the end of the work."""
        deadline = time.monotonic() + seconds
        while not self.work.stopping.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))

    async def _slot(self):
        return await asyncio.get_running_loop().run_in_executor(None, self.slots.acquire, self.relay.key, self.relay_cap)

    def _release(self, slot) -> None:
        if slot is not None:
            threading.Thread(target=self.slots.release, args=(self.relay.key, slot), daemon=True).start()

    async def _connection(self, index: int) -> None:
        work = self.work
        client, slot, failures = None, None, 0
        try:
            while True:
                row = await self._next()
                if row is None:
                    return
                if client is None:
                    if slot is None:
                        slot = await self._slot()
                        if slot is None:  # every connection the relay allows us is in use elsewhere: wait
                            work.last_ok = time.monotonic()  # (waiting for a slot is not the relay failing)
                            work.put_back(row)
                            await self._sleep(0.5 + random.random())
                            continue
                    try:
                        client = await AsyncRelayClient.open(self.relay)
                    except (RelayUnavailable, RelayRefusedUs) as e:
                        failures += 1
                        work.last_error = str(e)
                        self._release(slot)
                        slot = None
                        work.put_back(row)  # another connection may take it; this one waits
                        await self._sleep(_backoff(failures))
                        continue
                    failures = 0
                    work.opened()
                try:
                    message = _build(self.skeleton, row)
                except Exception as e:  # the profile changed since preparation and no longer renders
                    work.done(row, _personalization_failed(e))
                    continue
                try:
                    data, eight_bit = message.data, message.eight_bit
                    if eight_bit and "8bitmime" not in client.features:
                        data, eight_bit = message.seven_bit(), False  # a relay without 8BITMIME: quoted-printable
                    outcome = await client.transaction(message.mail_from, message.address, data, eight_bit=eight_bit)
                except RelayUnavailable as e:  # a 421: the relay took nothing
                    outcome = None
                    work.last_error = str(e)
                except (OSError, TimeoutError, ConnectionError, asyncio.IncompleteReadError) as e:
                    if client.content_sent:
                        outcome = unknown_outcome(e)
                    else:  # nothing of it reached the relay: another connection sends it
                        outcome = None
                        work.last_error = f"connection lost before the message went out: {e or type(e).__name__}"
                except Exception as e:  # a fault of ours: the message may have gone, so never resend it
                    log.exception("send: sending log %s", row.id)
                    outcome = Outcome(ok=False, code=0, unknown=True, quarantine=False, text=f"{type(e).__name__}: {e}")
                if outcome is None or outcome.unknown:
                    client.abort()
                    client = None
                    work.lost()
                    self._release(slot)
                    slot = None
                if outcome is None:
                    work.put_back(row)
                    failures += 1
                    await self._sleep(_backoff(failures))
                    continue
                work.last_ok = time.monotonic()
                work.done(row, outcome)
        finally:
            if client is not None:
                await client.quit()
                work.lost()
            self._release(slot)


class ThreadedSender:
    """A thread per connection, for Django's blocking mail backends."""

    def __init__(self, *, work: Work, skeleton, connections: int, name: str):
        self.work, self.skeleton = work, skeleton
        self.threads = [threading.Thread(target=self._connection, name=f"{name}-{i}", daemon=True) for i in range(connections)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self, timeout: float) -> None:
        for t in self.threads:
            t.join(timeout)

    def _connection(self) -> None:
        work = self.work
        transport, failures = None, 0
        try:
            while True:
                row = work.take()
                if row is None:
                    return
                if transport is None:
                    transport = transport_for(self.skeleton)
                    try:
                        transport.open()
                    except Exception as e:  # the backend cannot be reached now
                        transport, failures = None, failures + 1
                        work.last_error = f"{type(e).__name__}: {e}"
                        work.put_back(row)
                        work.stopping.wait(_backoff(failures))
                        continue
                    failures = 0
                    work.opened()
                try:
                    message = _build(self.skeleton, row)
                except Exception as e:
                    work.done(row, _personalization_failed(e))
                    continue
                try:
                    outcome = transport.send(message)
                except Exception as e:  # a fault of ours: the message may have gone, so never resend it
                    log.exception("send: sending log %s", row.id)
                    outcome = Outcome(ok=False, code=0, unknown=True, quarantine=False, text=f"{type(e).__name__}: {e}")
                work.last_ok = time.monotonic()
                work.done(row, outcome)
        finally:
            if transport is not None:
                transport.close()
                work.lost()
