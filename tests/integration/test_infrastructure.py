"""The three real-part fixtures each drive one real test."""

import smtplib
import time
import uuid

import pytest
from django.core.mail import send_mail

from system.models import Heartbeat
from system.tasks import heartbeat

pytestmark = pytest.mark.integration


def wait_for(predicate, timeout=20.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_a_task_makes_the_round_trip_through_the_broker_to_a_real_worker(celery_worker):
    name = f"test-{uuid.uuid4().hex[:8]}"
    heartbeat.delay(name)
    beat = wait_for(lambda: Heartbeat.objects.filter(name=name).first())
    assert beat.at is not None


def test_a_message_sent_over_smtp_is_received_and_chosen_recipients_refused(smtp_server):
    send_mail("Hello", "Body text", "from@example.com", ["to@example.com"])
    assert len(smtp_server.messages) == 1
    received = smtp_server.messages[0]
    assert received.rcpt_tos == ["to@example.com"]
    assert received.message["Subject"] == "Hello"

    smtp_server.set_reply("gone@example.com", "550 5.1.1 User unknown")
    smtp_server.set_reply("full@example.com", "452 4.2.2 Mailbox full", times=1)
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("from@example.com", ["gone@example.com"], b"Subject: x\r\n\r\nx")
        assert refused.value.recipients["gone@example.com"][0] == 550
        with pytest.raises(smtplib.SMTPRecipientsRefused) as once:
            client.sendmail("from@example.com", ["full@example.com"], b"Subject: y\r\n\r\ny")
        assert once.value.recipients["full@example.com"] == (452, b"4.2.2 Mailbox full")
        client.sendmail("from@example.com", ["full@example.com"], b"Subject: y\r\n\r\ny")
    assert len(smtp_server.received_by("full@example.com")) == 1
    assert smtp_server.received_by("gone@example.com") == []
