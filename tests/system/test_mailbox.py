import re
import smtplib

import pytest
from django.core.mail import EmailMultiAlternatives

from accounts import roles
from system.smtp import RecordingHandler, start_sink

pytestmark = pytest.mark.django_db


@pytest.fixture
def sink_with_mailbox(settings, tmp_path):
    settings.MAILBOX_DIR = tmp_path
    handler = RecordingHandler(mailbox_dir=tmp_path, keep_in_memory=False)
    controller = start_sink(handler)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = controller.hostname, controller.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    yield controller
    controller.stop()


def test_the_sink_keeps_every_message_and_the_staff_mailbox_shows_it_rendered_and_raw(sink_with_mailbox, client, make_user):
    message = EmailMultiAlternatives("Weekly news", "Plain body", "shop@example.com", ["reader@example.com"])
    message.attach_alternative("<p>Rich <b>body</b></p><script>alert(1)</script>", "text/html")
    message.send()
    staff = make_user("staffer", roles.ADMINISTRATORS)
    client.force_login(staff)
    listing = client.get("/dev/mailbox/").content.decode()
    assert "Weekly news" in listing and "reader@example.com" in listing
    name = re.search(r'href="/dev/mailbox/([^/"]+\.eml)/"', listing).group(1)
    detail = client.get(f"/dev/mailbox/{name}/").content.decode()
    assert "Plain body" in detail  # text part
    assert "Content-Type: multipart/alternative" in detail  # raw source
    html = client.get(f"/dev/mailbox/{name}/html/")
    assert b"<b>body</b>" in html.content
    assert "sandbox" in html["Content-Security-Policy"]  # its scripts never run


def test_the_mailbox_is_for_administrators_only_and_refuses_path_tricks(sink_with_mailbox, client, marketer, admin):
    client.force_login(marketer)
    refused = client.get("/dev/mailbox/")
    # the app's 403 page naming the role, not a redirect to the Django admin's login
    assert refused.status_code == 403 and "Administration" in refused.content.decode()
    assert 'data-testid="forbidden"' in refused.content.decode()
    client.logout()
    assert client.get("/dev/mailbox/").url.startswith("/login/")
    with smtplib.SMTP(sink_with_mailbox.hostname, sink_with_mailbox.port) as smtp:
        smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: hi\r\n\r\nhello\r\n")
    client.force_login(admin)
    assert client.get("/dev/mailbox/").status_code == 200
    assert client.get("/dev/mailbox/..%2Fsecret_key/").status_code == 404


def test_the_mailbox_shows_when_each_message_arrived_as_a_date_and_time(sink_with_mailbox, client, make_user, settings):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    settings.TIME_ZONE = "Asia/Tokyo"  # the app's time zone, not UTC: shown like every other time
    with smtplib.SMTP(sink_with_mailbox.hostname, sink_with_mailbox.port) as smtp:
        smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: Arrival\r\n\r\nhello\r\n")
    client.force_login(make_user("staffer", roles.ADMINISTRATORS))
    page = client.get("/dev/mailbox/").content.decode()
    row = re.search(r"<tr><td>([^<]*)</td><td>a@example.com</td>", page)
    assert row, "the message's row is missing"
    shown = row.group(1)
    assert not re.fullmatch(r"\d{9,}", shown), f"a raw Unix timestamp: {shown}"
    at = datetime.strptime(shown, "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo("Asia/Tokyo"))
    assert abs((datetime.now(ZoneInfo("Asia/Tokyo")) - at).total_seconds()) < 120
