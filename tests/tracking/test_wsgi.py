"""The WSGI fast path (config.wsgi) answers the pixel and the click like the views do."""

from io import BytesIO

import pytest

from tracking.models import TrackingLog
from tracking.views import GIF

pytestmark = pytest.mark.django_db(transaction=True)
SALE = "https://shop.example.com/sale"


def call(path, method="GET"):
    from config.wsgi import application

    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1",
        "wsgi.input": BytesIO(b""), "wsgi.url_scheme": "http", "wsgi.errors": BytesIO(), "REMOTE_ADDR": "198.51.100.7",
        "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0",
    }  # fmt: skip
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(application(environ, start_response))
    return int(seen["status"][:3]), seen["headers"], body


def test_fast_path_pixel_click_and_bad_tokens(make_sent, settings):
    settings.TRACKING_BUFFER_SECONDS = 0  # each hit written before answering (tests/tracking/test_buffer.py: in bulk)
    sent = make_sent()
    status, headers, body = call(sent.open_path())
    assert (status, headers["Content-Type"], body) == (200, "image/gif", GIF)
    assert "no-store" in headers["Cache-Control"]
    status, headers, _ = call(sent.click_path(SALE))
    assert (status, headers["Location"]) == (302, SALE)
    assert sorted(TrackingLog.objects.values_list("kind", "is_machine")) == [("click", False), ("open", False)]
    sent.refresh()
    assert sent.log.first_open_at and sent.log.first_click_at

    assert call("/t/o/garbage.gif")[:3:2] == (200, GIF)
    status, headers, body = call("/t/c/garbage")
    assert status == 404 and "Location" not in headers and b"This link is not valid" in body
    assert TrackingLog.objects.count() == 2
    assert call(sent.unsubscribe_path())[0] == 200  # everything else goes through Django


@pytest.mark.parametrize("buffer_seconds", [0, 0.2])
def test_fast_path_click_failure_answers_503_not_a_redirect(make_sent, monkeypatch, settings, buffer_seconds):
    from tracking import services

    settings.TRACKING_BUFFER_SECONDS = buffer_seconds
    sent = make_sent()

    def broken(**kwargs):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(services, "tracking_click", broken)
    monkeypatch.setattr(services, "tracked_link", broken)
    status, headers, body = call(sent.click_path(SALE))
    assert status == 503 and "Location" not in headers and b"try again" in body
