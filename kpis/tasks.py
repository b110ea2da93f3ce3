import logging

from celery import shared_task

from deliveries.models import Delivery

from . import services

logger = logging.getLogger(__name__)


@shared_task(name=services.RECOMPUTE_TASK, ignore_result=True)
def kpis_recompute(delivery_id: int) -> None:
    """Recompute one delivery's KPIs (idempotent: it always rewrites the snapshot from the logs)."""
    try:
        services.kpis_compute(delivery_id=delivery_id)
        services.kpis_charts_store(delivery_id=delivery_id)  # the window's charts go with the figures
    except Delivery.DoesNotExist:
        logger.info("kpis.recompute: delivery %s no longer exists; nothing to do", delivery_id)
    except Exception:
        services.kpis_lock_release(delivery_id=delivery_id)  # let the next click or hour try again
        raise


@shared_task(name="kpis.recompute_recent", ignore_result=True)
def kpis_recompute_recent() -> int:
    """Beat, every KPI_RECOMPUTE_INTERVAL seconds: recompute every message sent in the last 30 days."""
    return len(services.kpis_recompute_recent())


@shared_task(name=services.SEND_ENDED_TASK, ignore_result=True)
def kpis_send_ended(delivery_id: int) -> None:
    """A send just ended: enqueued by deliveries' send-ended hook after its commit (deliveries
    imports nothing of kpis). Recomputes the KPIs once, unless a snapshot or a recompute already
    covers the end."""
    try:
        services.kpis_compute_after_send(delivery_id=delivery_id)
    except Exception:
        services.kpis_lock_release(delivery_id=delivery_id)  # let the page or the hourly job try again
        raise
