"""Thin, idempotent Celery wrappers around the deliveries services (ids in, never instances)."""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError

log = logging.getLogger(__name__)

# A database that is away when a task starts: the task tries again (the reconciler covers the rest).
DB_DOWN = (OperationalError, InterfaceError)


@shared_task(name="deliveries.prepare", ignore_result=True)
def prepare_delivery(delivery_id: int) -> None:
    from .services import delivery_prepare_run

    delivery_prepare_run(delivery_id=delivery_id)


@shared_task(name="deliveries.dispatch", ignore_result=True, autoretry_for=DB_DOWN, retry_backoff=2, retry_backoff_max=30, max_retries=20)
def dispatch_delivery(delivery_id: int) -> int:
    from .sending import dispatch

    return dispatch(delivery_id=delivery_id)


@shared_task(name="deliveries.send_batch", ignore_result=True, acks_late=True, autoretry_for=DB_DOWN, retry_backoff=2,
             retry_backoff_max=30, max_retries=20)  # fmt: skip
def send_batch_task(delivery_id: int, lo: int, hi: int) -> int:
    # acks_late is safe: a redelivered batch finds its rows already claimed or final.
    from .sending import send_batch

    return send_batch(delivery_id=delivery_id, lo=lo, hi=hi)


@shared_task(name="deliveries.tick", ignore_result=True)
def tick() -> dict:
    """Every SEND_TICK_SECONDS: start due scheduled messages, retry passes, expire, reap dead
    claims, re-enqueue stalled sends, fail preparations whose worker died."""
    from .sending import deliveries_tick
    from .services import deliveries_fail_stuck_preparations, deliveries_start_due

    started = deliveries_start_due()
    return {"started": started, "stuck_preparations": deliveries_fail_stuck_preparations(), **deliveries_tick()}
