from datetime import datetime, timedelta

from django.utils import timezone

from .models import Heartbeat


def heartbeat_get(*, name: str) -> Heartbeat | None:
    return Heartbeat.objects.filter(name=name).first()


def workers_alive(*, max_age: float, now: datetime | None = None) -> int:
    """How many Celery workers beat within the last `max_age` seconds (system/worker.py)."""
    from .worker import WORKER_PREFIX

    now = now or timezone.now()
    return Heartbeat.objects.filter(name__startswith=WORKER_PREFIX, at__gte=now - timedelta(seconds=max_age)).count()
