"""Provider events through django-anymail: Mailgun (signed with its webhook signing key) and
Postmark (HTTP basic auth), with the payloads their documentation shows, carrying our sending log
id in the message metadata (Mailgun user-variables / Postmark Metadata)."""

import base64
import hashlib
import hmac
import json
import time

import pytest

from audiences.models import Quarantine
from deliveries.models import Delivery, JournalEntry, SendingStatus
from tracking.models import ProviderEvent, TrackingLog

pytestmark = pytest.mark.django_db
SIGNING_KEY = "key-4f0f3e7c7c2c5b1a"
BASIC = "anymail:s3cret-webhook"


@pytest.fixture(autouse=True)
def _anymail(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": BASIC, "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}


@pytest.fixture
def counted(sent):
    Delivery.objects.filter(pk=sent.delivery.pk).update(sent_count=1, processed_count=1, to_deliver_count=1)
    return sent


def mailgun(client, event_data, *, token="a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0", key=SIGNING_KEY, age=0):
    timestamp = str(int(time.time() - age))
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    body = {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event_data}
    return client.post("/webhooks/mailgun/tracking/", data=json.dumps(body), content_type="application/json")


def mailgun_event(sent, event, **extra):
    # Shape from Mailgun's documentation ("Webhooks" / event structure).
    data = {
        "event": event,
        "timestamp": 1529006854.329574,
        "id": "DACSsAdVSeGpLid7TN03WA",
        "recipient": sent.log.address,
        "recipient-domain": "example.com",
        "tags": ["summer"],
        "user-variables": {"dispatch_log": str(sent.log.pk)},
        "message": {"headers": {"to": sent.log.address, "message-id": "20130503182626.18666.16540@example.com", "from": "shop@example.com", "subject": "Summer sale"}},
        "envelope": {"transport": "smtp", "sender": "bob@example.com", "targets": sent.log.address},
        "delivery-status": {"code": 250, "message": "OK", "description": "", "attempt-no": 1, "tls": True},
    }
    data.update(extra)
    return data


def postmark(client, payload, auth=BASIC):
    headers = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    return client.post("/webhooks/postmark/tracking/", data=json.dumps(payload), content_type="application/json", **headers)


def postmark_bounce(sent, type_="HardBounce", **extra):
    # Shape from Postmark's documentation ("Bounce webhook").
    payload = {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": type_,
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "summer",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": {"dispatch_log": str(sent.log.pk)},
        "ServerID": 23,
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": sent.log.address,
        "From": "shop@example.com",
        "BouncedAt": "2019-11-05T16:33:54.9070259Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Summer sale",
    }
    payload.update(extra)
    return payload


def state(sent):
    sent.refresh()
    d = Delivery.objects.get(pk=sent.delivery.pk)
    return sent.log.status, sent.log.failure_type, sent.log.failure_reason, d.sent_count, d.failed_count


# --- Mailgun (signing key) ----------------------------------------------------------------------
def test_mailgun_delivered_changes_nothing_but_is_kept(client, counted):
    assert mailgun(client, mailgun_event(counted, "delivered")).status_code == 200
    assert state(counted) == (SendingStatus.SENT, "", "", 1, 0)
    assert ProviderEvent.objects.get().event_type == "delivered"


def test_mailgun_hard_bounce_after_sent_fails_the_log_quarantines_and_journals(client, counted):
    event = mailgun_event(
        counted,
        "failed",
        severity="permanent",
        reason="bounce",
        **{"delivery-status": {"code": 550, "message": "5.1.1 The email account that you tried to reach does not exist.", "description": "", "attempt-no": 1}},
    )
    assert mailgun(client, event).status_code == 200
    assert state(counted) == (SendingStatus.FAILED, "hard", "user_unknown", 0, 1)
    assert "does not exist" in counted.log.failure_text
    q = Quarantine.objects.get(address=counted.log.address)
    assert q.status == Quarantine.Status.QUARANTINE and q.error_count == 1
    entry = JournalEntry.objects.get(delivery=counted.delivery)
    assert entry.text == f"Asynchronous bounce for {counted.log.address} reported by mailgun: User unknown (Hard)."

    # The same event again (Mailgun retries): nothing changes.
    assert mailgun(client, event).status_code == 200
    assert state(counted) == (SendingStatus.FAILED, "hard", "user_unknown", 0, 1)
    assert Quarantine.objects.get().error_count == 1
    assert JournalEntry.objects.count() == 1 and ProviderEvent.objects.count() == 1


def test_mailgun_complaint_puts_the_address_on_denylist(client, counted):
    assert mailgun(client, mailgun_event(counted, "complained")).status_code == 200
    assert Quarantine.objects.get(address=counted.log.address).status == Quarantine.Status.DENYLIST
    assert state(counted) == (SendingStatus.SENT, "", "", 1, 0)


def test_mailgun_bad_signature_is_refused(client, counted):
    response = mailgun(client, mailgun_event(counted, "complained"), key="key-not-the-right-one")
    assert response.status_code == 400
    assert not Quarantine.objects.exists() and not ProviderEvent.objects.exists()


def test_mailgun_webhook_is_refused_until_a_signing_key_is_set(client, counted, settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": BASIC}
    assert mailgun(client, mailgun_event(counted, "complained")).status_code == 404
    assert not ProviderEvent.objects.exists()


def test_mailgun_open_is_recorded_as_a_tracking_log(client, counted):
    event = mailgun_event(
        counted, "opened", timestamp=time.time(), **{"client-info": {"user-agent": "Mozilla/5.0 (Windows NT 10.0) Firefox/131.0"}}
    )
    assert mailgun(client, event).status_code == 200
    assert list(TrackingLog.objects.values_list("kind", "is_machine")) == [("open", False)]
    assert counted.refresh().log.first_open_at is not None


# --- Postmark (basic auth) ----------------------------------------------------------------------
def test_postmark_delivered_and_its_duplicate(client, counted):
    payload = {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": counted.log.address,
        "Tag": "summer",
        "DeliveredAt": "2019-11-05T16:33:54.9070259Z",
        "Details": "Test delivery webhook details",
        "Metadata": {"dispatch_log": str(counted.log.pk)},
    }
    assert postmark(client, payload).status_code == 200
    assert postmark(client, payload).status_code == 200  # no event id: same log, type and time
    assert ProviderEvent.objects.count() == 1
    assert state(counted) == (SendingStatus.SENT, "", "", 1, 0)


def test_postmark_hard_bounce_after_sent(client, counted):
    assert postmark(client, postmark_bounce(counted)).status_code == 200
    assert state(counted) == (SendingStatus.FAILED, "hard", "user_unknown", 0, 1)
    assert Quarantine.objects.get().status == Quarantine.Status.QUARANTINE
    assert postmark(client, postmark_bounce(counted)).status_code == 200  # duplicate (same ID)
    assert state(counted) == (SendingStatus.FAILED, "hard", "user_unknown", 0, 1)
    assert JournalEntry.objects.count() == 1


def test_postmark_soft_bounce_is_soft(client, counted):
    payload = postmark_bounce(counted, "SoftBounce", ID=42, Details="smtp;452 4.2.2 Mailbox full", Description="Mailbox full")
    assert postmark(client, payload).status_code == 200
    assert state(counted) == (SendingStatus.FAILED, "soft", "mailbox_full", 0, 1)
    assert Quarantine.objects.get().status == Quarantine.Status.ERRONEOUS


def test_postmark_complaint_puts_the_address_on_denylist(client, counted):
    payload = postmark_bounce(counted, "SpamComplaint", ID=77, Name="Spam complaint", RecordType="SpamComplaint", TypeCode=512)
    assert postmark(client, payload).status_code == 200
    assert Quarantine.objects.get().status == Quarantine.Status.DENYLIST
    assert state(counted) == (SendingStatus.SENT, "", "", 1, 0)


def test_postmark_bad_credentials_are_refused(client, counted):
    assert postmark(client, postmark_bounce(counted), auth="anymail:wrong").status_code == 400
    assert postmark(client, postmark_bounce(counted), auth=None).status_code == 400
    assert state(counted) == (SendingStatus.SENT, "", "", 1, 0)
    assert not ProviderEvent.objects.exists()


def test_basic_auth_webhooks_are_refused_until_a_secret_is_set(client, counted, settings):
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    assert postmark(client, postmark_bounce(counted), auth=None).status_code == 403
    assert state(counted) == (SendingStatus.SENT, "", "", 1, 0)


def test_event_without_our_log_id_is_ignored(client, counted):
    assert postmark(client, postmark_bounce(counted, Metadata={})).status_code == 200
    assert state(counted) == (SendingStatus.SENT, "", "", 1, 0)
    assert not ProviderEvent.objects.exists()


def test_provider_events_are_forgotten_after_the_retention(counted, settings):
    from datetime import timedelta

    from django.utils import timezone

    from tracking.tasks import provider_events_purge

    settings.PROVIDER_EVENT_RETENTION_DAYS = 30
    old = ProviderEvent.objects.create(esp="postmark", key="old", event_type="delivered", at=timezone.now(), sending_log=counted.log)
    ProviderEvent.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(days=31))
    ProviderEvent.objects.create(esp="postmark", key="recent", event_type="delivered", at=timezone.now(), sending_log=counted.log)
    assert provider_events_purge.delay().get() == 1
    assert list(ProviderEvent.objects.values_list("key", flat=True)) == ["recent"]


def test_mailgun_refuses_a_signature_outside_the_window(client, counted, settings):
    """Issue 15 item 9: before, a signature of any age was accepted (a captured request could be
    replayed for ever)."""
    settings.MAILGUN_WEBHOOK_MAX_AGE_SECONDS = 900
    assert mailgun(client, mailgun_event(counted, "complained"), age=3600).status_code == 400
    assert mailgun(client, mailgun_event(counted, "complained"), age=-3600).status_code == 400
    assert not ProviderEvent.objects.exists()
    assert mailgun(client, mailgun_event(counted, "complained"), age=60).status_code == 200
    assert ProviderEvent.objects.count() == 1
