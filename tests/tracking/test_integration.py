"""A real send (real Celery worker, real SMTP server), then the recipients' links followed over HTTP."""

import http.client
import re
import time
from urllib.parse import urlsplit

import pytest
from django.test import Client

from deliveries.models import Delivery, SendingLog, State
from deliveries.services import delivery_confirm, delivery_create, delivery_prepare
from tests.deliveries.conftest import make_audience, make_profiles
from tracking.models import TrackingLog

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
HTML = (
    "<html><body><p>Hello {{ first_name }},</p>"
    '<p><a href="https://shop.example.com/offer">See the offer</a> '
    '<a href="https://shop.example.com/account?id={{ attributes.account }}">Your account</a> '
    '<a href="mailto:help@shop.example.com">Help</a></p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · <a href="{{ mirror_url }}">View online</a></p></body></html>'
)


def wait_for_state(pk, states, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = Delivery.objects.get(pk=pk)
        if d.state in states:
            return d
        time.sleep(0.2)
    raise AssertionError(f"still {Delivery.objects.get(pk=pk).state} after {timeout}s")


def fetch(method, url, body=None, headers=None):
    """One HTTP request, redirects NOT followed (as a mail client's first hop)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request(method, path, body=body, headers={"User-Agent": BROWSER, **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), data


def test_send_then_open_click_unsubscribe_and_mirror_over_http(celery_worker, smtp_server, live_server, marketer, settings):
    settings.SITE_URL = live_server.url
    settings.TRACKING_MACHINE_DELAY_SECONDS = 0  # the test clicks within a second of delivery
    profiles = make_profiles(
        [
            {"email": "ann@example.com", "first_name": "Ann", "attributes": {"account": "A-1"}},
            {"email": "bob@example.com", "first_name": "Bob", "attributes": {"account": "B-2"}},
        ]
    )
    d = delivery_create(
        user=marketer,
        data={"label": "Tracked send", "sender_name": "Shop", "sender_address": "news@shop.example.com",
              "subject": "Hi {{ first_name }}", "html": HTML, "audience": make_audience(profiles)},  # fmt: skip
    )
    delivery_prepare(delivery=d, user=marketer)
    assert wait_for_state(d.pk, {State.READY, State.PREPARATION_FAILED}).state == State.READY
    delivery_confirm(delivery=d, user=marketer)
    assert wait_for_state(d.pk, {State.FINISHED, State.FAILED}).state == State.FINISHED

    [ann_mail] = smtp_server.received_by("ann@example.com")
    message = ann_mail.message
    html = message.get_body(preferencelist=("html",)).get_content()
    site = re.escape(live_server.url)
    clicks = re.findall(rf'href="({site}/t/c/[^"]+)"', html)
    assert len(clicks) == 2  # the offer and the personalized account link; mailto: left alone
    assert 'href="mailto:help@shop.example.com"' in html
    [pixel] = re.findall(rf'<img src="({site}/t/o/[^"]+\.gif)"', html)
    [unsubscribe] = re.findall(rf'href="({site}/t/u/[^"]+)"', html)
    [mirror] = re.findall(rf'href="({site}/t/m/[^"]+)"', html)
    assert message["List-Unsubscribe"] == f"<{unsubscribe}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    status, headers, body = fetch("GET", pixel)
    assert (status, headers["Content-Type"], len(body)) == (200, "image/gif", 43)
    status, headers, _ = fetch("GET", clicks[0])
    assert (status, headers["Location"]) == (302, "https://shop.example.com/offer")
    status, headers, _ = fetch("GET", clicks[1])
    assert (status, headers["Location"]) == (302, "https://shop.example.com/account?id=A-1")
    status, _, body = fetch("GET", mirror)
    assert status == 200 and b"Hello Ann," in body
    status, _, body = fetch("POST", unsubscribe, body="List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200

    ann = SendingLog.objects.select_related("profile").get(delivery=d, address="ann@example.com")
    assert ann.first_open_at is not None and ann.first_click_at is not None
    assert ann.profile.email_denylisted
    assert sorted(TrackingLog.objects.filter(sending_log=ann).values_list("kind", flat=True)) == ["click", "click", "mirror", "open", "optout"]
    assert not TrackingLog.objects.filter(is_machine=True).exists()
    assert not TrackingLog.objects.filter(sending_log__address="bob@example.com").exists()

    staff = Client()
    staff.force_login(marketer)
    history = staff.get(f"/profiles/{ann.profile_id}/history/").content.decode()
    assert "Tracked send" in history and "Opted out" in history
    row = history.split(f'data-delivery="{d.pk}"')[1]
    cells = [c.split(">", 1)[1].split("<", 1)[0] for c in row.split('<td class="num"')[1:3]]
    assert cells == ["2", "2"]  # opens (pixel + mirror page) and clicks
