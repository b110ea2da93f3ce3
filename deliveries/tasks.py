"""Thin, idempotent Celery wrappers around the deliveries services (ids in, never instances)."""

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(name="deliveries.prepare", ignore_result=True)
def prepare_delivery(delivery_id: int) -> None:
    from .services import delivery_prepare_run

    delivery_prepare_run(delivery_id=delivery_id)


@shared_task(name="deliveries.dispatch", ignore_result=True)
def dispatch_delivery(delivery_id: int) -> int:
    from .sending import dispatch

    return dispatch(delivery_id=delivery_id)


@shared_task(name="deliveries.send_batch", ignore_result=True, acks_late=True)
def send_batch_task(delivery_id: int, lo: int, hi: int) -> int:
    # acks_late is safe: a redelivered batch finds its rows already claimed or final.
    from .sending import send_batch

    return send_batch(delivery_id=delivery_id, lo=lo, hi=hi)


@shared_task(name="deliveries.tick", ignore_result=True)
def tick() -> dict:
    """Every minute: start due scheduled messages, retry passes, reap dead claims."""
    from .sending import deliveries_tick
    from .services import deliveries_start_due

    started = deliveries_start_due()
    return {"started": started, **deliveries_tick()}
