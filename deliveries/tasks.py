"""Thin, idempotent Celery wrappers around the deliveries services (ids in, never instances).

The top of the app's staircase: tasks import services and the engine, which never import tasks
(they enqueue what comes next by name through `deliveries.queue`)."""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import queue, sending, services

log = logging.getLogger(__name__)

# A database that is away when a task starts: the task tries again (the reconciler covers the rest).
DB_DOWN = (OperationalError, InterfaceError)


@shared_task(name=queue.PREPARE, ignore_result=True)
def prepare_delivery(delivery_id: int) -> None:
    services.delivery_prepare_run(delivery_id=delivery_id)


@shared_task(name=queue.DISPATCH, ignore_result=True, autoretry_for=DB_DOWN, retry_backoff=2, retry_backoff_max=30, max_retries=20)
def dispatch_delivery(delivery_id: int) -> int:
    return sending.dispatch(delivery_id=delivery_id)


@shared_task(name=queue.SEND_BATCH, ignore_result=True, acks_late=True, autoretry_for=DB_DOWN, retry_backoff=2,
             retry_backoff_max=30, max_retries=20)  # fmt: skip
def send_batch_task(delivery_id: int, lo: int, hi: int) -> int:
    # acks_late is safe: a redelivered batch finds its rows already claimed or final.
    return sending.send_batch(delivery_id=delivery_id, lo=lo, hi=hi)


@shared_task(name="deliveries.tick", ignore_result=True)
def tick() -> dict:
    """Every SEND_TICK_SECONDS: start due scheduled messages, retry passes, expire, reap dead
    claims, re-enqueue stalled sends, fail preparations whose worker died."""
    started = services.deliveries_start_due()
    return {"started": started, "stuck_preparations": services.deliveries_fail_stuck_preparations(), **sending.deliveries_tick()}
