"""Pause takes effect within the chunk in flight: the claim itself refuses the rows of a send that
is no longer sending, so no worker starts another chunk once the click is committed."""

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from deliveries.models import SendingLog, SendingStatus, State
from deliveries.sending import claim_chunk
from deliveries.services import delivery_confirm, delivery_pause, delivery_resume

from .conftest import make_audience, make_profiles

EVERY_ID = (0, 2**31 - 1)


@pytest.mark.django_db
def test_once_the_send_is_paused_the_next_claim_takes_nothing(ready_delivery, marketer, django_capture_on_commit_callbacks):
    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=False):
        delivery_confirm(delivery=d, user=marketer)  # confirmed; the worker is about to claim
    lo, hi = EVERY_ID
    first = claim_chunk(delivery=d, lo=lo, hi=hi, limit=2, now=timezone.now())
    assert len(first) == 2  # a worker's batch took its first chunk

    delivery_pause(delivery=d, user=marketer)  # the marketer clicks Pause while that chunk goes out
    # Pause leaves the other rows pending (Stop cancels them); even so, the next claim takes none
    assert claim_chunk(delivery=d, lo=lo, hi=hi, limit=2, now=timezone.now()) == []
    assert SendingLog.objects.filter(delivery=d, status=SendingStatus.SENDING).count() == 2  # only the chunk in flight


@pytest.mark.django_db(transaction=True)
def test_a_batch_paused_mid_send_sends_only_rows_it_had_already_claimed(ready_delivery, marketer, smtp_server, settings, client):
    """The engine claims ahead (at most 2 x SEND_CHUNK rows a worker process holds): those may still
    go after the click; nothing is claimed after it, and the rest waits, untouched, for Resume."""
    settings.SEND_CHUNK = 2
    d = ready_delivery(audience=make_audience(make_profiles([f"pause{i}@example.com" for i in range(12)])))
    accept = smtp_server.handle_DATA

    async def pause_after_the_first_message(server, session, envelope):
        reply = await accept(server, session, envelope)
        if len(smtp_server.messages) == 1:  # the marketer clicks Pause while the first chunk goes out
            delivery_pause(delivery=d, user=marketer)
            connection.close()  # this thread's connection (the SMTP server's)
        return reply

    smtp_server.handle_DATA = pause_after_the_first_message
    delivery_confirm(delivery=d, user=marketer)  # the send runs at commit: dispatch, then the batch

    d.refresh_from_db()
    assert d.state == State.PAUSED
    sent = len(smtp_server.messages)
    assert 1 <= sent <= 2 * settings.SEND_CHUNK  # what was claimed before the click, and not one message more
    statuses = list(SendingLog.objects.filter(delivery=d).order_by("id").values_list("status", "attempts"))
    assert statuses == [("sent", 1)] * sent + [("pending", 0)] * (12 - sent)
    assert d.journal.filter(text__startswith="Delivery paused by Mia Marketer (marketer)").exists()

    client.force_login(marketer)
    block = client.get(reverse("deliveries:deployment-block", args=[d.pk])).content.decode()
    assert "Paused" in block and "Sending is paused: resume it to continue." in block
    assert f"{sent} of 12 processed" in block

    smtp_server.handle_DATA = accept
    delivery_resume(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.FINISHED
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == sorted(f"pause{i}@example.com" for i in range(12))
