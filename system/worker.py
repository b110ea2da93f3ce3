"""Liveness of the Celery processes, written to the database so that health answers at once.

A worker records its heartbeat (`worker:<hostname>`) when it starts and every
HEALTH_WORKER_MAX_AGE / 3 seconds from its own timer, and removes it when it stops cleanly; health
counts the fresh ones instead of broadcasting a ping and waiting for replies (seconds on the
filesystem broker, which polls). The scheduler records its heartbeat (`beat`) as soon as it starts,
then every minute through a worker (the `system.heartbeat` task).

Imported by config/celery.py before Django is set up: no model is imported at module level.
"""

import logging

from celery import bootsteps

log = logging.getLogger(__name__)
WORKER_PREFIX = "worker:"


def _interval() -> float:
    from django.conf import settings

    return max(1.0, settings.HEALTH_WORKER_MAX_AGE / 3)


def _record(name: str, close: bool = True) -> None:
    from django.db import connection

    from .services import heartbeat_record

    try:
        heartbeat_record(name=name)
    except Exception as e:  # the database is away: health says so on its own; try again next time
        log.warning("heartbeat %s not recorded: %s", name, type(e).__name__)
    finally:
        if close:
            connection.close()  # the timer's thread keeps no connection between beats


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Bootstep of every worker (`app.steps["worker"]`): start, beat, and say goodbye."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None
        self.beat_name = ""

    def start(self, worker):
        self.beat_name = f"{WORKER_PREFIX}{worker.hostname}"
        _record(self.beat_name)
        self.tref = worker.timer.call_repeatedly(_interval(), _record, (self.beat_name,), priority=10)

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        if self.beat_name:
            from django.db import connection

            from .services import heartbeat_delete

            try:
                heartbeat_delete(name=self.beat_name)
            except Exception as e:
                log.warning("heartbeat %s not removed: %s", self.beat_name, type(e).__name__)
            finally:
                connection.close()

    terminate = stop  # a cold shutdown (second Ctrl-C, or the test worker) says goodbye too


def beat_started(sender=None, **kwargs) -> None:
    """`beat_init`: a scheduler that just started is up now, not after its first minute."""
    _record("beat", close=False)
