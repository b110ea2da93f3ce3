import os

from celery import Celery
from celery.signals import beat_init

from system.worker import WorkerHeartbeat, beat_started

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("dispatch")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["worker"].add(WorkerHeartbeat)  # each worker records that it is alive (read by health, no ping)
beat_init.connect(beat_started, weak=False)  # the scheduler counts as up from its start
