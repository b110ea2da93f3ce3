import logging

from celery import shared_task

from . import services

logger = logging.getLogger(__name__)


@shared_task(name="tracking.provider_events_purge", ignore_result=True)
def provider_events_purge() -> int:
    """Daily: forget provider events older than PROVIDER_EVENT_RETENTION_DAYS (they are kept only
    to recognize a provider's repeated deliveries of the same event)."""
    deleted = services.provider_events_purge()
    logger.info("provider events purged: %s", deleted)
    return deleted
