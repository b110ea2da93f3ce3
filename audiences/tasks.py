import logging

from celery import shared_task

from . import services

logger = logging.getLogger(__name__)


@shared_task(name=services.IMPORT_TASK, ignore_result=True)
def import_run(job_id: int) -> None:
    """Import one uploaded CSV (idempotent: a job already taken is left alone)."""
    services.import_run(job_id=job_id)


@shared_task(name="audiences.quarantine_cleanup", ignore_result=True)
def quarantine_cleanup() -> int:
    """Daily: Erroneous addresses without recent errors return to Valid (DOMAIN.md §5)."""
    return services.quarantine_cleanup()


@shared_task(name="audiences.import_reap", ignore_result=True)
def import_reap() -> int:
    """Hourly: imports whose worker died are marked failed; their staging tables are dropped."""
    return services.import_reap()
