from celery import shared_task

from .services import heartbeat_record


@shared_task(name="system.heartbeat", ignore_result=True)
def heartbeat(name: str = "beat") -> str:
    """Record that the scheduler (or a test) reached a worker. Idempotent."""
    return str(heartbeat_record(name=name).at)
