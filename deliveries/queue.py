"""Enqueue the deliveries' tasks by name: the step of the staircase under services and the engine.

    tasks.py              (translates ids into calls: imports services and sending)
    services.py, sending.py, lifecycle.py   (enqueue what comes next through this module)
    queue.py              (this module: imports neither)

The task is looked up in the Celery app's registry by its name (`current_app.tasks[name]`), so
services and the engine never import tasks.py, and eager mode (the tests) still runs it at once.
The deliveries app registers its tasks in every process (`DeliveriesConfig.ready`).
"""

from __future__ import annotations

import logging
from functools import partial

from celery import current_app
from django.db import transaction

log = logging.getLogger(__name__)

# The task names (tasks.py registers them under these names).
PREPARE = "deliveries.prepare"
DISPATCH = "deliveries.dispatch"
SEND_BATCH = "deliveries.send_batch"


def task(name: str):
    """The registered task called `name` (KeyError when no process registered it)."""
    return current_app.tasks[name]


def _send(name: str, args: tuple, countdown: float | None, what: str) -> None:
    try:
        if countdown is None:
            task(name).delay(*args)
        else:
            task(name).apply_async(args, countdown=countdown)
    except Exception as e:  # kombu's errors differ per transport
        if not what:
            raise
        # A broker that is away: the beat's reconciler finds a send with work left and no live
        # batch (PostgreSQL, not the broker, says what is left).
        log.warning("could not enqueue %s (the reconciler will): %s", what, e)


def enqueue(name: str, *args, countdown: float | None = None, after_commit: bool = False, what: str = "") -> None:
    """Enqueue task `name` with `args` (`countdown` seconds later, or after the current
    transaction commits). With `what` (a few words naming the work), a broker that cannot take
    the task is logged instead of raised: where the reconciler makes up for it."""
    send = partial(_send, name, args, countdown, what)
    if after_commit:
        transaction.on_commit(send)
    else:
        send()
