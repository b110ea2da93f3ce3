"""System health at GET /api/health/ and on the dashboard, with each part down in turn."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from system.models import Heartbeat
from system.services import heartbeat_record

pytestmark = [pytest.mark.integration]


def fresh_beat():
    heartbeat_record(name="beat")


def health(client):
    response = client.get("/api/health/")
    return response.status_code, response.json()


def assert_no_secrets(body: dict):
    text = str(body)
    for secret in (
        settings.CELERY_BROKER_URL,
        settings.SECRET_KEY,
        settings.DATABASES["default"]["NAME"],
        "127.0.0.1",
        "redis://",
        "postgres",
    ):
        assert secret not in text, secret


@pytest.fixture
def worker(transactional_db, _celery_test_config):
    """Start and stop a real worker inside the test (the celery_worker fixture cannot be stopped midway)."""
    from celery.contrib.testing.worker import start_worker

    from tests.conftest import _broker_reachable, require

    app = _celery_test_config
    require(_broker_reachable(app), f"Celery broker {settings.CELERY_BROKER_URL} is not reachable")

    def _start():
        return start_worker(app, pool="threads", concurrency=1, perform_ping_check=False, loglevel="WARNING",
                            shutdown_timeout=10, queues=[app.conf.task_default_queue])  # fmt: skip

    return _start


def test_all_well_then_the_worker_stops(client, worker):
    fresh_beat()
    with worker():  # the worker's heartbeat, recorded as it starts: no ping to wait for
        status, body = health(client)
        assert status == 200, body
        assert body["status"] == "ok" and body["failing"] == []
        assert body["parts"]["workers"]["count"] >= 1 and body["parts"]["workers"]["status"] == "ok"
        assert body["parts"]["queue"]["length"] >= 0 and body["parts"]["beat"]["age_seconds"] < 60
        assert_no_secrets(body)
    status, body = health(client)
    assert status == 503 and body["failing"] == ["workers"]
    assert body["parts"]["workers"] == {
        "status": "down",
        "count": 0,
        "detail": "No worker is running: sends, preparations and alerts are not running. Start a Celery worker.",
    }
    assert body["parts"]["database"]["status"] == body["parts"]["broker"]["status"] == "ok"


@pytest.mark.django_db
def test_broker_on_a_closed_port(client, settings):
    fresh_beat()
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    status, body = health(client)
    assert status == 503
    assert body["failing"] == ["broker", "workers", "queue"]
    assert body["parts"]["broker"]["detail"].startswith("Unreachable: no task can be queued.")
    assert ":1/" not in str(body)  # the broker's address stays private


@pytest.mark.django_db
def test_scheduler_silent_for_too_long(client, settings):
    Heartbeat.objects.create(name="beat", at=timezone.now() - timedelta(minutes=10))
    status, body = health(client)
    assert status == 503 and "beat" in body["failing"]
    assert body["parts"]["beat"]["detail"].startswith("Last run 10 minutes ago")
    Heartbeat.objects.all().delete()
    assert health(client)[1]["parts"]["beat"]["detail"] == "Never ran: start the scheduler (celery beat)."


def test_database_unreachable(client, transactional_db, settings):
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent-dir/dispatch.sqlite3"
    else:
        connection.settings_dict.update(HOST="127.0.0.1", PORT="1")
    try:
        status, body = health(client)
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    assert status == 503 and body["failing"][0] == "database"
    assert body["parts"]["database"]["detail"] == "Unreachable: pages and sends are stopped. Check the database server."
    assert "nonexistent" not in str(body)


@pytest.mark.django_db
def test_health_on_the_dashboard_and_exempt_from_the_ssl_redirect(client, ops, settings):
    import re

    fresh_beat()
    client.force_login(ops)
    page = client.get("/deployments/").content.decode()
    assert 'hx-get="/deployments/health/"' in page  # loaded after the page: the worker ping never slows it
    html = client.get("/deployments/health/").content.decode()
    assert re.search(r'data-part="database" data-status="ok"', html)
    assert re.search(r'data-part="workers" data-status="down"', html) and 'data-testid="worker-count">0<' in html
    assert "Start a Celery worker." in html
    # behind a load balancer speaking plain HTTP, /api/health/ answers instead of redirecting to HTTPS
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^api/health/$"]
    from django.test import Client

    fresh = Client()  # the middleware reads its settings when first loaded
    assert fresh.get("/api/health/").status_code == 503
    assert fresh.get("/deployments/").status_code == 301


@pytest.mark.django_db
def test_public_answer_is_cached_briefly(client, settings):
    settings.HEALTH_CACHE_SECONDS = 30
    fresh_beat()
    first = health(client)
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    assert health(client) == first  # answered from the cache: no second ping
    settings.HEALTH_CACHE_SECONDS = 0
    assert "broker" in health(client)[1]["failing"]


def test_a_running_worker_is_counted_without_a_ping(client, worker, monkeypatch):
    """Health reads the workers' heartbeats: it never broadcasts a ping and waits for the replies
    (seconds on the embedded filesystem broker, which polls)."""
    from config.celery import app

    def no_ping(*args, **kwargs):
        raise AssertionError("health must not ping the workers")

    fresh_beat()
    with worker():
        monkeypatch.setattr(app.control, "ping", no_ping)
        status, body = health(client)
        assert status == 200, body
        assert body["parts"]["workers"] == {"status": "ok", "count": 1, "detail": "1 worker online."}


@pytest.mark.django_db
def test_a_worker_silent_for_too_long_is_down(client, settings):
    settings.HEALTH_WORKER_MAX_AGE = 30
    fresh_beat()
    Heartbeat.objects.create(name="worker:celery@gone", at=timezone.now() - timedelta(seconds=31))
    assert health(client)[1]["parts"]["workers"]["status"] == "down"
    Heartbeat.objects.create(name="worker:celery@here", at=timezone.now() - timedelta(seconds=5))
    assert health(client)[1]["parts"]["workers"]["count"] == 1


@pytest.mark.django_db
def test_a_scheduler_that_just_started_is_up_at_once(client):
    from celery.signals import beat_init

    import config.celery  # noqa: F401  (connects the handler, as `celery beat` does)

    assert health(client)[1]["parts"]["beat"]["status"] == "down"  # never ran
    beat_init.send(sender=None)  # what `celery beat` sends as it starts, a minute before its first task
    beat = health(client)[1]["parts"]["beat"]
    assert beat["status"] == "ok" and beat["age_seconds"] < 5
