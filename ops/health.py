"""System health: database, broker, Celery workers, queue length, last beat run, mail relay.

Each part answers {"status": "ok" | "down", "detail": <a sentence>, ...}. Nothing here names a
host, a password or a URL: the JSON is public (load balancers, monitors). Only the dashboard (signed
in) shows the mail relay's address, from `Health.relay_address`, which the JSON leaves out.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from celery import current_app
from django.conf import settings
from django.contrib.humanize.templatetags.humanize import intcomma
from django.db import connections
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

log = logging.getLogger(__name__)

OK, DOWN = "ok", "down"
PARTS = ("database", "broker", "workers", "queue", "beat", "relay")
SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"  # the one the send pipeline speaks SMTP with


@dataclass
class Health:
    parts: dict[str, dict] = field(default_factory=dict)
    checked_at: datetime = field(default_factory=timezone.now)
    relay_address: str = ""  # "host:port" of the SMTP relay checked: the dashboard's, never the JSON's
    relay_error: str = ""  # why it is down, for the dashboard's sentence

    @property
    def failing(self) -> list[str]:
        return [name for name in PARTS if self.parts.get(name, {}).get("status") != OK]

    @property
    def ok(self) -> bool:
        return not self.failing

    def as_dict(self) -> dict:
        return {
            "status": OK if self.ok else "failing",
            "failing": self.failing,
            "checked_at": self.checked_at.isoformat(),
            "parts": self.parts,
        }

    @property
    def rows(self) -> list[tuple[str, dict]]:
        labels = {
            "database": _("Database"),
            "broker": _("Broker"),
            "workers": _("Workers"),
            "queue": _("Queue"),
            "beat": _("Scheduler (beat)"),
            "relay": _("Mail relay"),
        }
        rows = [(labels[name], {"key": name, **self.parts[name]}) for name in PARTS if name in self.parts]
        for _label, part in rows:
            if part["key"] == "relay":
                part.update(address=self.relay_address, error=self.relay_error)
        return rows


def check_database(using: str = "default") -> dict:
    try:
        with connections[using].cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
        return {"status": OK, "detail": _("Reachable.")}
    except Exception as e:  # any driver error means the same thing to an operator
        log.warning("health: database unreachable: %s", type(e).__name__)
        connections[using].close_if_unusable_or_obsolete()
        return {"status": DOWN, "detail": _("Unreachable: pages and sends are stopped. Check the database server.")}


def _app():
    """The Celery app (config's: the current one; an app imports nothing of the project above it)."""
    return current_app._get_current_object()


def check_broker_and_queue(app=None) -> tuple[dict, dict, object]:
    """(broker part, queue part, an open connection or None)."""
    app = app or _app()
    queue_name = app.conf.task_default_queue
    conn = app.connection_for_write(settings.CELERY_BROKER_URL)  # the setting, read now (tests point it elsewhere)
    try:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
    except Exception as e:
        log.warning("health: broker unreachable: %s", type(e).__name__)
        conn.release()
        down = {"status": DOWN, "detail": _("Unreachable: no task can be queued. Check the broker (Redis).")}
        return down, {"status": DOWN, "length": None, "detail": _("Unknown: the broker is unreachable.")}, None
    broker = {"status": OK, "detail": _("Reachable.")}
    try:
        length = _queue_length(conn, queue_name)
        queue = {
            "status": OK, "length": length,
            "detail": ngettext("%(n)s task waiting.", "%(n)s tasks waiting.", length) % {"n": intcomma(length)},
        }  # fmt: skip
    except Exception as e:
        log.warning("health: queue length unreadable: %s", type(e).__name__)
        queue = {"status": DOWN, "length": None, "detail": _("The queue length could not be read from the broker.")}
    return broker, queue, conn


def _queue_length(conn, name: str) -> int:
    from kombu.exceptions import ChannelError

    channel = conn.default_channel
    try:
        return int(channel.queue_declare(queue=name, passive=True).message_count)
    except ChannelError:  # Redis drops the key of an empty queue: nothing waiting
        return 0


def check_workers(*, broker_ok: bool = True, now: datetime | None = None) -> dict:
    """Workers heard from within HEALTH_WORKER_MAX_AGE (their heartbeats, system/worker.py): one
    query, where a ping would wait seconds for replies."""
    from system.selectors import workers_alive

    if not broker_ok:
        return {"status": DOWN, "count": 0, "detail": _("Unknown: the broker is unreachable.")}
    try:
        count = workers_alive(max_age=settings.HEALTH_WORKER_MAX_AGE, now=now)
    except Exception as e:
        log.warning("health: worker heartbeats unreadable: %s", type(e).__name__)
        return {"status": DOWN, "count": 0, "detail": _("Unknown: the database is unreachable.")}
    if not count:
        return {
            "status": DOWN,
            "count": 0,
            "detail": _("No worker is running: sends, preparations and alerts are not running. Start a Celery worker."),
        }
    return {"status": OK, "count": count, "detail": ngettext("%(n)d worker online.", "%(n)d workers online.", count) % {"n": count}}


def check_beat(now: datetime | None = None) -> dict:
    from system.selectors import heartbeat_get

    now = now or timezone.now()
    try:
        beat = heartbeat_get(name="beat")
    except Exception:
        return {
            "status": DOWN,
            "last_run": None,
            "age_seconds": None,
            "detail": _("Unknown: the database is unreachable."),
        }
    if beat is None:
        return {
            "status": DOWN,
            "last_run": None,
            "age_seconds": None,
            "detail": _("Never ran: start the scheduler (celery beat)."),
        }
    age = max(0, int((now - beat.at).total_seconds()))
    status = OK if age <= settings.HEALTH_BEAT_MAX_AGE else DOWN
    detail = (
        _("Last run %(s)d seconds ago.") % {"s": age}
        if status == OK
        else _(
            "Last run %(m)d minutes ago: scheduled sends, retries and alerts wait. Check the scheduler (celery beat)."
        )
        % {"m": age // 60}
    )
    return {"status": status, "last_run": beat.at.isoformat(), "age_seconds": age, "detail": detail}


def probe_relay(timeout: float | None = None) -> tuple[str, float]:
    """Connect to the SMTP relay as the send pipeline does (SSL or STARTTLS per settings), send
    NOOP, then QUIT. Returns ("", seconds taken) when it answered, else (why not, seconds)."""
    timeout = settings.HEALTH_RELAY_TIMEOUT if timeout is None else timeout
    started = time.monotonic()
    conn = None
    try:
        cls = smtplib.SMTP_SSL if settings.EMAIL_USE_SSL else smtplib.SMTP
        conn = cls(settings.EMAIL_HOST, settings.EMAIL_PORT, timeout=timeout)
        conn.ehlo()
        if settings.EMAIL_USE_TLS:
            conn.starttls()
            conn.ehlo()
        code, _reply = conn.noop()
        if code != 250:
            return _("it answered %(code)d to NOOP") % {"code": code}, time.monotonic() - started
        return "", time.monotonic() - started
    except Exception as e:  # every failure means the same to an operator: messages fail as "Unreachable"
        log.warning("health: mail relay unreachable: %s", type(e).__name__)
        return _relay_reason(e, timeout), time.monotonic() - started
    finally:
        if conn is not None:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()


def _relay_reason(e: Exception, timeout: float) -> str:
    """A short reason that names no host and repeats no server text (the JSON is public)."""
    if isinstance(e, ConnectionRefusedError):
        return _("connection refused")
    if isinstance(e, TimeoutError) or isinstance(e.__context__, TimeoutError):  # smtplib wraps a read timeout
        return _("no answer within %(s)s s") % {"s": f"{timeout:g}"}
    if isinstance(e, socket.gaierror):
        return _("host name not found")
    if isinstance(e, ssl.SSLError):
        return _("TLS handshake failed")
    if isinstance(e, smtplib.SMTPNotSupportedError):
        return _("it does not offer STARTTLS")
    if isinstance(e, smtplib.SMTPServerDisconnected):
        return _("it closed the connection")
    if isinstance(e, smtplib.SMTPResponseException):
        return _("it answered %(code)d") % {"code": e.smtp_code}
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return type(e).__name__


def relay_part(probe: tuple[str, float] | None) -> dict:
    """The "relay" part from probe_relay's answer (None: the backend does not speak SMTP)."""
    if probe is None:
        backend = settings.EMAIL_BACKEND
        where = (
            _("a provider's API (anymail)") if backend.startswith("anymail.")
            else _("the console") if backend.endswith(".console.EmailBackend")
            else _("memory (locmem)") if backend.endswith(".locmem.EmailBackend")
            else _("a mail backend that is not SMTP")
        )  # fmt: skip
        return {"status": OK, "detail": _("Not checked: messages go to %(where)s, not to an SMTP relay.") % {"where": where}}
    error, seconds = probe
    if error:
        return {
            "status": DOWN,
            "detail": _('Unreachable (%(error)s): every message fails as "Unreachable". Check the mail relay (EMAIL_URL).')
            % {"error": error},
        }
    return {"status": OK, "detail": _("Answered NOOP in %(ms)d ms.") % {"ms": round(seconds * 1000)}}


def system_health() -> Health:
    """Check every part: each is a quick read (the workers' heartbeats, not a ping), except the mail
    relay, probed meanwhile for at most HEALTH_RELAY_TIMEOUT."""
    health = Health()
    smtp = settings.EMAIL_BACKEND == SMTP_BACKEND
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="health-relay") as pool:
        relay = pool.submit(_in_language(translation.get_language(), probe_relay)) if smtp else None
        health.parts["database"] = check_database()
        broker, queue, conn = check_broker_and_queue()
        try:
            health.parts["broker"] = broker
            health.parts["workers"] = check_workers(broker_ok=conn is not None)
            health.parts["queue"] = queue
        finally:
            if conn is not None:
                conn.release()
        probe = relay.result() if relay is not None else None
    health.parts["beat"] = check_beat() if health.parts["database"]["status"] == OK else {
        "status": DOWN, "last_run": None, "age_seconds": None, "detail": _("Unknown: the database is unreachable."),
    }  # fmt: skip
    health.parts["relay"] = relay_part(probe)
    if smtp:
        host = settings.EMAIL_HOST
        health.relay_address = f"{f'[{host}]' if ':' in host else host}:{settings.EMAIL_PORT}"
        health.relay_error = probe[0]
    return health


def _in_language(language: str | None, func):
    """`func` run in another thread, its messages in the caller's language (translation is per thread)."""

    def run():
        with translation.override(language):
            return func()

    return run


def system_health_cached() -> Health:
    """The public endpoint's answer, reused for HEALTH_CACHE_SECONDS: monitors polling it (or anyone
    else, it is public) cannot make every web process broadcast a worker ping on each request."""
    from django.core.cache import cache

    seconds = settings.HEALTH_CACHE_SECONDS
    if seconds <= 0:
        return system_health()
    health = cache.get("ops:health")
    if health is None:
        health = system_health()
        cache.set("ops:health", health, seconds)
    return health
