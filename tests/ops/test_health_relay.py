"""The mail relay in system health: /api/health/ and the dashboard say when sends cannot reach it."""

import socket
import time

import pytest

from system.services import heartbeat_record

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _quick(settings):
    heartbeat_record(name="beat")


def health(client):
    response = client.get("/api/health/")
    return response.status_code, response.json()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once the socket closes: nothing listens there


@pytest.fixture
def relay_on_closed_port(settings):
    port = closed_port()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    return port


def test_relay_that_answers_is_ok(client, smtp_server):
    status, body = health(client)
    assert body["failing"] == ["workers"], body  # the relay is not among the failing parts
    relay = body["parts"]["relay"]
    assert relay["status"] == "ok" and relay["detail"].startswith("Answered NOOP in "), relay
    assert str(smtp_server.port) not in str(body) and "127.0.0.1" not in str(body)  # the JSON is public
    assert smtp_server.messages == []  # a probe, not a message


def test_relay_on_a_closed_port_is_down_and_named(client, relay_on_closed_port):
    status, body = health(client)
    assert status == 503
    assert "relay" in body["failing"]
    assert body["parts"]["relay"] == {
        "status": "down",
        "detail": 'Unreachable (connection refused): every message fails as "Unreachable". '
        "Check the mail relay (EMAIL_URL).",
    }
    assert str(relay_on_closed_port) not in str(body)


def test_relay_that_never_greets_is_down_after_the_timeout(client, settings):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts the connection (kernel backlog) but never says 220
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = listener.getsockname()
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.HEALTH_RELAY_TIMEOUT = 0.3
    try:
        status, body = health(client)
    finally:
        listener.close()
    assert status == 503 and "relay" in body["failing"]
    assert body["parts"]["relay"]["detail"].startswith("Unreachable (no answer within 0.3 s)")


def test_relay_checked_with_starttls_when_the_settings_ask_for_it(client, smtp_server, settings):
    settings.EMAIL_USE_TLS = True  # as the send pipeline would: this server offers no STARTTLS
    status, body = health(client)
    assert status == 503 and "relay" in body["failing"]
    assert body["parts"]["relay"]["detail"].startswith("Unreachable (it does not offer STARTTLS)")


@pytest.mark.parametrize(
    "backend, where",
    [
        ("django.core.mail.backends.console.EmailBackend", "the console"),
        ("django.core.mail.backends.locmem.EmailBackend", "memory (locmem)"),
        ("anymail.backends.postmark.EmailBackend", "a provider's API (anymail)"),
    ],
)
def test_backends_without_a_relay_are_not_checked(client, settings, backend, where):
    settings.EMAIL_BACKEND = backend
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", closed_port()  # would be down if it were probed
    status, body = health(client)
    assert body["parts"]["relay"] == {
        "status": "ok",
        "detail": f"Not checked: messages go to {where}, not to an SMTP relay.",
    }
    assert "relay" not in body["failing"]


def test_dashboard_names_the_relay_and_why(client, ops, relay_on_closed_port):
    client.force_login(ops)
    html = client.get("/deployments/health/").content.decode()
    assert 'data-part="relay" data-status="down"' in html
    assert f"Mail relay 127.0.0.1:{relay_on_closed_port} unreachable: connection refused." in html
    assert "Every message fails as “Unreachable” until it answers" in html


def test_dashboard_shows_the_relay_up(client, ops, smtp_server):
    client.force_login(ops)
    html = client.get("/deployments/health/").content.decode()
    assert 'data-part="relay" data-status="ok"' in html
    assert f"Mail relay 127.0.0.1:{smtp_server.port}: Answered NOOP in " in html


def test_public_answer_is_cached_with_the_relay(client, settings, smtp_server):
    settings.HEALTH_CACHE_SECONDS = 30
    first = health(client)
    assert first[1]["parts"]["relay"]["status"] == "ok"
    settings.EMAIL_PORT = closed_port()
    assert health(client) == first  # from the cache: no probe on every request
    settings.HEALTH_CACHE_SECONDS = 0
    assert "relay" in health(client)[1]["failing"]


def test_a_silent_relay_costs_health_its_timeout_and_no_more(client, settings):
    """A relay that accepts the connection and never answers is reported down once its timeout
    passed; the other parts are quick reads (no worker ping waits beside it)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = listener.getsockname()
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.HEALTH_RELAY_TIMEOUT = 2
    started = time.monotonic()
    try:
        status, body = health(client)
    finally:
        listener.close()
    assert "relay" in body["failing"] and "workers" in body["failing"]
    assert time.monotonic() - started < 3.5, "health waited longer than the relay's timeout"
