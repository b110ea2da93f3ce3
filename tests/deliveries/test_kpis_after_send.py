"""Whatever ends a send (its first pass, a retry pass, Stop sending), its KPIs are recomputed once,
without anyone opening the message page."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deliveries.models import SendingLog, SendingStatus, State
from deliveries.services import delivery_confirm
from kpis.models import KpiSnapshot
from kpis.services import kpis_compute

pytestmark = pytest.mark.django_db


def test_a_send_that_finishes_after_a_retry_pass_gets_its_kpis_recomputed(
    ready_delivery, marketer, smtp_server, settings, client, django_capture_on_commit_callbacks
):
    settings.RETRY_BACKOFF_SECONDS = [0.5]
    smtp_server.set_reply("person0@example.com", "451 4.3.0 Try again", times=1)
    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=False) as confirmed:
        delivery_confirm(delivery=d, user=marketer)
    kpis_compute(delivery_id=d.pk)  # what someone saw before the send went out: Sent 0
    assert KpiSnapshot.objects.get(pk=d.pk).sent == 0

    with django_capture_on_commit_callbacks(execute=False) as retry:  # the retry waits for its countdown
        for callback in confirmed:
            callback()  # the worker runs the first pass
    d.refresh_from_db()
    assert d.state == State.RETRY_PENDING
    assert SendingLog.objects.get(delivery=d, address="person0@example.com").status == SendingStatus.PENDING

    # the retry's time comes (the countdown passes): its wait is over, without sleeping through it
    SendingLog.objects.filter(delivery=d, status=SendingStatus.PENDING).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        for callback in retry:
            callback()  # the worker runs the retry pass, which ends the send
    d.refresh_from_db()
    assert d.state == State.FINISHED
    assert d.journal.filter(text="Retry pass 1 started: 1 message to retry.").count() == 1

    snap = KpiSnapshot.objects.get(pk=d.pk)
    assert (snap.to_deliver, snap.sent, snap.delivered, snap.bounces, snap.pending) == (5, 5, 5, 0, 0)
    assert snap.computing_since is None

    client.force_login(marketer)
    with django_capture_on_commit_callbacks(execute=False) as opened:
        html = client.get(reverse("kpis:deployment-kpis", args=[d.pk]) + "?embed=1").content.decode()
    assert not opened  # once: opening the page does not recompute again
    assert "Computed at" in html and "Computing…" not in html


def test_a_send_that_finishes_on_its_first_pass_gets_its_kpis_recomputed(
    ready_delivery, marketer, smtp_server, django_capture_on_commit_callbacks
):
    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.FINISHED and len(smtp_server.messages) == 5
    snap = KpiSnapshot.objects.get(pk=d.pk)
    assert (snap.sent, snap.delivered) == (5, 5) and snap.computed_at >= d.finished_at


def test_a_stopped_send_gets_its_kpis_recomputed(ready_delivery, marketer, client, django_capture_on_commit_callbacks):
    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=False):
        delivery_confirm(delivery=d, user=marketer)  # confirmed, nothing sent yet
    client.force_login(marketer)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("deliveries:action", args=[d.pk, "stop"]))
    d.refresh_from_db()
    assert d.state == State.STOPPED
    snap = KpiSnapshot.objects.get(pk=d.pk)
    assert (snap.to_deliver, snap.sent, snap.cancelled) == (5, 0, 5)
