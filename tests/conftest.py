"""Shared test infrastructure: backends, real Celery worker, real SMTP server, real browser.

Suites that need something missing (PostgreSQL, Redis, Chromium) are skipped with the reason,
except when CI is set: then a skip fails the run.
"""

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop

from django.conf import settings  # noqa: E402
from django.core.cache import cache  # noqa: E402

from accounts import roles  # noqa: E402
from accounts.setup import install_roles  # noqa: E402
from tests.factories import PASSWORD, DeliveryFactory, SendingLogFactory, UserFactory  # noqa: E402

CI = bool(os.environ.get("CI"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def require(condition: bool, reason: str) -> None:
    """Skip (or, under CI, fail) when `condition` is false."""
    if condition:
        return
    if CI:
        pytest.fail(f"{reason} (CI is set: skipping is not allowed)", pytrace=False)
    pytest.skip(reason)


def db_vendor() -> str:
    return settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]


def broker_kind() -> str:
    return settings.CELERY_BROKER_URL.split("://", 1)[0]


def database_used_by_tests() -> str:
    """The database the tests really use: the one Django creates for the run (never the
    development database DATABASE_URL names, which the tests leave alone)."""
    from django.db import connections

    return connections["default"].creation._get_test_db_name()


def pytest_report_header(config):
    db = settings.DATABASES["default"]
    name = database_used_by_tests()
    where = name if db_vendor() == "sqlite3" else f"{db.get('HOST') or 'socket'}:{db.get('PORT') or ''}/{name}"
    lines = [
        f"dispatch: test database {db_vendor()} ({where}), created for this run and dropped after it"
        f"{'' if os.environ.get('DATABASE_URL') else ' [embedded default: set DATABASE_URL=postgres://… for PostgreSQL]'}",
        f"dispatch: broker {broker_kind()}{'' if os.environ.get('CELERY_BROKER_URL') else ' [embedded default: set CELERY_BROKER_URL=redis://… for Redis]'}",
        f"dispatch: chromium {'found at ' + CHROMIUM if Path(CHROMIUM).exists() else 'missing (browser suite will be skipped)'}",
    ]
    if CI:
        lines.append("dispatch: CI is set, so any skipped test fails the run")
    return lines


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if CI and skipped and session.exitstatus == 0:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; failing the run.", red=True)
        session.exitstatus = 1


# --- Celery ----------------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def _celery_test_config():
    """Tasks run eagerly by default; the broker queue is private to this test session."""
    from config.celery import app

    folder = None
    app.conf.task_default_queue = f"dispatch-test-{uuid.uuid4().hex[:8]}"
    if broker_kind() == "filesystem":
        folder = Path(tempfile.mkdtemp(prefix="dispatch-broker-"))
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir()
        app.conf.broker_transport_options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield app
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _test_cache():
    """The cache under its own key prefix for this session (a file cache in a folder of its own).
    The broker may share its Redis: the tests delete their own keys, never `cache.clear()` it."""
    from django.test import override_settings

    prefix = f"dispatch-test-{uuid.uuid4().hex[:8]}"
    conf = dict(settings.CACHES["default"], KEY_PREFIX=prefix)
    folder = None
    if conf["BACKEND"].endswith("FileBasedCache"):
        folder = tempfile.mkdtemp(prefix="dispatch-cache-")
        conf["LOCATION"] = folder
        os.environ["CACHE_URL"] = f"file://{folder}"
    os.environ["CACHE_KEY_PREFIX"] = prefix  # processes a test starts share it
    with override_settings(CACHES={"default": conf}):
        yield prefix
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def clear_test_cache() -> None:
    """Delete this session's cache keys (only them: a Redis may hold the broker's queues)."""
    conf = settings.CACHES["default"]
    if conf["BACKEND"].endswith("RedisCache"):
        client = cache._cache.get_client(write=True)
        keys = list(client.scan_iter(match=f"{conf['KEY_PREFIX']}:*", count=1000))
        if keys:
            client.delete(*keys)
    else:
        cache.clear()


@pytest.fixture(autouse=True)
def _test_settings(settings, _test_cache):
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0  # worker threads must not keep the test DB open
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # tests only: fast users
    clear_test_cache()
    yield
    from tracking.buffer import hit_buffer_stop

    hit_buffer_stop()  # a tracking buffer a test started: its thread ends, its connection closes


def _broker_reachable(app) -> bool:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False


@pytest.fixture
def celery_worker(transactional_db, _celery_test_config):
    """A real Celery worker (threads pool, 2 threads) on the configured broker, in this process."""
    from celery.contrib.testing.worker import start_worker

    app = _celery_test_config
    require(_broker_reachable(app), f"Celery broker {settings.CELERY_BROKER_URL} is not reachable")
    app.conf.task_always_eager = False
    try:
        with start_worker(
            app,
            pool="threads",
            concurrency=2,
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=30,
            queues=[app.conf.task_default_queue],
        ) as worker:
            yield worker
    finally:
        app.conf.task_always_eager = True


# --- SMTP --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made at test time: (certificate path, key path)."""
    import subprocess

    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],  # fmt: skip
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def smtp_server_with(settings, tls_certificate):
    """Start a real SMTP server on loopback with options, and point the app's email settings at it:
    `smtp_server_with(pipelining=True, starttls=False, auth=None)`; `auth=("user", "password")`
    requires a login (over STARTTLS when `starttls`). Returns the handler (see `smtp_server`)."""
    import ssl

    from system.smtp import RecordingHandler, start_sink

    controllers = []

    def start(*, pipelining: bool = True, starttls: bool = False, auth: tuple[str, str] | None = None, eight_bit_mime: bool = True):
        handler = RecordingHandler()
        context = None
        if starttls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls_certificate)
        controller = start_sink(handler, pipelining=pipelining, tls_context=context, auth=auth, eight_bit_mime=eight_bit_mime)
        controllers.append(controller)
        handler.host, handler.port = controller.hostname, controller.port
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = controller.hostname, controller.port
        settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = auth or ("", "")
        settings.EMAIL_USE_TLS, settings.EMAIL_USE_SSL = starttls, False
        settings.EMAIL_SSL_VERIFY, settings.EMAIL_SSL_CAFILE = True, str(tls_certificate[0])
        settings.EMAIL_URL = f"smtp://{controller.hostname}:{controller.port}"
        return handler

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def smtp_server(smtp_server_with):
    """A real SMTP server on loopback (it advertises PIPELINING) that records messages (`.messages`)
    and can refuse chosen recipients (`.set_reply(address, "550 5.1.1 User unknown", times=None)`)."""
    return smtp_server_with()


# --- browser -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def _chromium():
    require(Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(_chromium, live_server):
    """A fresh browser page whose relative URLs go to the live test server."""
    context = _chromium.new_context(base_url=live_server.url)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()


@pytest.fixture
def sign_in():
    def _sign_in(page, username: str, password: str = PASSWORD):
        page.goto("/login/")
        page.get_by_label("Login").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/login/" not in url)

    return _sign_in


# --- people --------------------------------------------------------------------------------
@pytest.fixture
def make_user(db):
    from django.apps import apps

    install_roles(apps)  # a transactional test's flush removed what the data migration made

    def _make(username: str, *groups: str, **kwargs):
        return UserFactory(username=username, groups=list(groups), **kwargs)

    return _make


@pytest.fixture
def admin(make_user):
    return make_user("admin", roles.ADMINISTRATORS, first_name="Ada", last_name="Admin")


@pytest.fixture
def marketer(make_user):
    return make_user("marketer", roles.STANDARD_USERS, first_name="Mia", last_name="Marketer")


@pytest.fixture
def preparer(make_user):
    return make_user("preparer", roles.PREPARERS, first_name="Paul", last_name="Preparer")


@pytest.fixture
def approver(make_user):
    return make_user("approver", roles.APPROVERS, first_name="Alice", last_name="Approver")


@pytest.fixture
def ops(make_user):
    return make_user("ops", roles.DELIVERY_SUPERVISORS, first_name="Omar", last_name="Ops")


@pytest.fixture
def postgres_only(db):
    require(db_vendor() == "postgresql", "needs PostgreSQL: set DATABASE_URL=postgres://…")


# --- messages and their sending logs, inserted directly (never through the sender) ---------------
@pytest.fixture
def make_delivery(db):
    """make_delivery(label="Spring sale", state=State.FINISHED, sent=0, failed=0, **fields) -> Delivery

    A message whose send reached `state` (tests/factories.DeliveryFactory: started two hours ago,
    ended an hour ago when it did), with the live counters the sender keeps: `sent` and `failed`
    messages, processed = sent + failed, to deliver = sent + failed unless given. The KPI, ops and
    tracking tests read these; the deliveries tests make theirs through the services."""
    from deliveries.models import State

    def _make(label="Spring sale", state=State.FINISHED, sent=0, failed=0, **fields):
        fields.setdefault("sent_count", sent)
        fields.setdefault("failed_count", failed)
        fields.setdefault("processed_count", fields["sent_count"] + fields["failed_count"])
        fields.setdefault("to_deliver_count", fields["processed_count"])
        return DeliveryFactory(label=label, state=state, **fields)

    return _make


@pytest.fixture
def add_logs(db):
    """add_logs(delivery, n, status="sent", failure_type="", failure_reason="", event_at=None, **fields) -> [SendingLog]

    `n` sending logs of `delivery` in one statement, processed 90 minutes ago (`event_at`) unless pending."""
    from deliveries.models import SendingLog, SendingStatus

    def _add(delivery, n, status=SendingStatus.SENT, failure_type="", failure_reason="", event_at=None, **fields):
        if event_at is not None:
            fields["event_at"] = event_at
        logs = SendingLogFactory.build_batch(
            n, delivery=delivery, status=status, failure_type=failure_type, failure_reason=failure_reason, **fields
        )
        return SendingLog.objects.bulk_create(logs)

    return _add
