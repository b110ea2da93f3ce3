"""Hooks deliveries owns: what an app above it (kpis, ops…) asks to be told, without deliveries
importing it (DESIGN.md: dependencies point one way, and no name of a higher app's task is
written here).

    on_send_ended(fn)   fn(delivery_id=…) is called once a send has ended (finished, failed or
                        stopped), after the commit of the transaction that ended it, whichever
                        path ended it (its last pass, a retry pass, the beat's reaper or expiry,
                        Stop sending, every message refused). Register it in the app's
                        AppConfig.ready() (kpis recomputes the send's KPIs).

A registered function should be quick (enqueue a task): it runs in the process that ended the
send, a worker or a web request. What it raises is logged, never raised to the one who ended the
send, and the other functions still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

log = logging.getLogger(__name__)

_send_ended: list[Callable[..., None]] = []


def on_send_ended(fn: Callable[..., None]) -> Callable[..., None]:
    """Register `fn(delivery_id=…)` to be called after a send ends (once, however often it is
    registered). Usable as a decorator."""
    if fn not in _send_ended:
        _send_ended.append(fn)
    return fn


def send_ended(*, delivery_id: int) -> None:
    """Call inside the transaction that ends a send: the registered functions run after its commit
    (nothing runs when it rolls back). Each end is one conditional update, so this runs once per end."""

    def notify() -> None:
        for fn in list(_send_ended):
            try:
                fn(delivery_id=delivery_id)
            except Exception:
                log.exception("delivery %s: the send-ended hook %s failed", delivery_id, getattr(fn, "__qualname__", fn))

    transaction.on_commit(notify)
