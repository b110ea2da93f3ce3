from django.db import models


class Heartbeat(models.Model):
    """The last time a named periodic job ran (`beat`, each worker's ping): read by system health."""

    name = models.CharField(max_length=100, unique=True)
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} @ {self.at:%Y-%m-%d %H:%M:%S}"
