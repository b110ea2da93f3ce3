from django.utils import timezone

from .models import Heartbeat


def heartbeat_record(*, name: str) -> Heartbeat:
    beat, _ = Heartbeat.objects.update_or_create(name=name, defaults={"at": timezone.now()})
    return beat


def heartbeat_delete(*, name: str) -> None:
    """A process that stops cleanly says so (a worker killed outright just stops beating)."""
    Heartbeat.objects.filter(name=name).delete()
