"""Thin Celery wrappers (beat): the 10-minute alert check, and the minute job."""

import logging

from celery import shared_task

from . import services
from .models import Criterion

log = logging.getLogger(__name__)


@shared_task(name="ops.alerts_check", ignore_result=True)
def alerts_check() -> int:
    """Every 10 minutes: check the messages of the last 24 hours against every criterion, email new alerts."""
    return len(services.alerts_check())


@shared_task(name="ops.minute", ignore_result=True)
def minute() -> dict:
    """Every minute: sample the sends' counters into the hourly table, and raise the alert for a send
    that paused itself at once (not 10 minutes later). Both are idempotent."""
    return {"hours": services.processed_hours_record(), "alerts": len(services.alerts_check(criteria=[Criterion.AUTOPAUSED]))}
