"""A WSGI fast path for the two hottest endpoints: the open pixel and the click redirect.

Every recipient's mail client loads the pixel and every click goes through the redirect, so these
two run far more often than any page. They need nothing from Django's middleware (no session, no
CSRF, no user, no locale, no messages), so `tracking_fast_path` answers them before Django's
handler while reusing the same services and settings. Everything else goes to Django as usual;
the views in tracking/views.py answer the same URLs identically where the fast path is not in
front (Django's test client, live_server). gunicorn and runserver both serve config.wsgi, which
installs it.

On PostgreSQL the hits are noted in memory and written in bulk by the process's buffer
(tracking/buffer.py): a pixel or a click on a plain link touches no database in the request.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from django.db import connection, connections
from django.db.utils import InterfaceError, OperationalError
from django.template.loader import render_to_string
from django.utils.encoding import iri_to_uri

from . import services
from .buffer import hit_buffer
from .views import GIF, NO_CACHE

logger = logging.getLogger(__name__)

_PIXEL = re.compile(r"/t/o/([^/]+)\.gif")
_CLICK = re.compile(r"/t/c/([^/]+)")
_COMMON = [("X-Content-Type-Options", "nosniff"), *NO_CACHE.items()]
_GIF_HEADERS = [("Content-Type", "image/gif"), ("Content-Length", str(len(GIF))), *_COMMON]


def _end_of_hit() -> None:
    """What Django does when a request ends (close a connection past CONN_MAX_AGE or broken),
    without re-arming the per-request health check (a `SELECT 1` round trip that would cost as
    much as the hit itself): a connection that dropped meanwhile is noticed by the next hit, which
    then runs again once on a fresh connection (`_retrying`)."""
    for conn in connections.all(initialized_only=True):
        conn.close_if_unusable_or_obsolete()
        if conn.connection is not None:
            conn.health_check_done = True


def _retrying(fn, **kwargs):
    try:
        return fn(**kwargs)
    except (OperationalError, InterfaceError):
        connection.close()
        return fn(**kwargs)


def tracking_fast_path(django_app):
    def application(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/t/") or environ.get("REQUEST_METHOD") != "GET":
            return django_app(environ, start_response)
        pixel = _PIXEL.fullmatch(path)
        click = None if pixel else _CLICK.fullmatch(path)
        if not pixel and not click:
            return django_app(environ, start_response)
        buffer = hit_buffer()
        ua, ip = environ.get("HTTP_USER_AGENT", ""), environ.get("REMOTE_ADDR", "")
        queried = buffer is None  # whether the database was used (then Django's end of request runs)
        try:
            if pixel:
                try:
                    if buffer is not None:
                        services.tracking_open_later(token=pixel.group(1), user_agent=ua, ip=ip, buffer=buffer)
                    else:
                        _retrying(services.tracking_open, token=pixel.group(1), hit=services.Hit(user_agent=ua, ip=ip))
                except Exception:  # the pixel is always answered, even when recording fails
                    logger.exception("open pixel: recording failed")
                start_response("200 OK", _GIF_HEADERS)
                return [GIF]
            if buffer is not None:
                url, queried = _retrying(services.tracking_click_later, token=click.group(1), user_agent=ua, ip=ip, buffer=buffer)
            else:
                url = _retrying(services.tracking_click, token=click.group(1), hit=services.Hit(user_agent=ua, ip=ip))
        except Exception:
            queried = True
            logger.exception("click redirect failed")
            body = b"The link could not be followed right now. Please try again in a moment."
            headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), ("Retry-After", "5")]
            start_response("503 Service Unavailable", [*headers, *_COMMON])
            return [body]
        finally:
            if queried:
                _end_of_hit()
        location = _location(url) if url is not None else None
        if location is None:
            body = render_to_string("tracking/not_found.html").encode()
            start_response(
                "404 Not Found",
                [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body))), *_COMMON],
            )
            return [body]
        start_response(
            "302 Found",
            [("Location", location), ("Content-Length", "0"), ("Referrer-Policy", "no-referrer"), *_COMMON],
        )
        return [b""]

    return application


@lru_cache(maxsize=4096)
def _location(url: str) -> str | None:
    """The Location header for a link (None when it is not one to redirect to), worked out once per link."""
    return iri_to_uri(url) if services.is_safe_target(url) else None
