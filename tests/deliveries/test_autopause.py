from email.utils import parseaddr

import pytest

from deliveries.models import SendingLog, State
from deliveries.services import delivery_confirm, delivery_resume, sending_policy_get, sending_policy_update

from .conftest import make_audience, make_profiles

pytestmark = pytest.mark.django_db


def test_send_pauses_itself_when_bounces_cross_the_limit_and_says_why(ready_delivery, marketer, admin, smtp_server, settings, django_capture_on_commit_callbacks):
    settings.SEND_CHUNK, settings.SEND_CONNECTIONS = 10, 2
    sending_policy_update(user=admin, autopause_bounce_rate=0.2, autopause_min_processed=10)
    emails = [f"x{i:03d}@example.com" for i in range(100)]
    for a in emails[::2]:  # every other recipient is refused: 50% > 20%
        smtp_server.set_reply(a, "550 5.1.1 User unknown")
    d = ready_delivery(audience=make_audience(make_profiles(emails)))
    with django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.PAUSED and d.autopaused_at is not None
    # it paused once the first outcomes were written: only rows already claimed went out (at most
    # 2 x SEND_CHUNK), the rest wait, untouched
    assert 10 <= d.processed_count <= 20 and d.failed_count * 5 > d.processed_count, list(d.journal.values_list("text", flat=True))
    assert SendingLog.objects.filter(delivery=d, status="pending", attempts=0).count() == 100 - d.processed_count
    entry = d.journal.get(level="critical")
    assert entry.text.startswith("Sending paused automatically: bounces + errors reached ")
    assert "(limit 20% after 10). Check the list and the sender, then resume or stop." in entry.text
    # a person resumes: it is their call, the send goes on to the end, each recipient tried once
    with django_capture_on_commit_callbacks(execute=True):
        delivery_resume(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.FINISHED and d.processed_count == 100
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == emails[1::2]  # the accepted half, once each


def test_below_the_minimum_volume_nothing_pauses(ready_delivery, marketer, smtp_server, django_capture_on_commit_callbacks):
    assert sending_policy_get().autopause_min_processed == 500
    smtp_server.set_reply("person0@example.com", "550 5.1.1 User unknown")
    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.FINISHED and d.autopaused_at is None


def test_only_administration_changes_the_policy(marketer):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        sending_policy_update(user=marketer, autopause_bounce_rate=0.5, autopause_min_processed=1)


def test_a_claim_takes_at_most_its_chunk_and_never_the_same_row_twice(ready_delivery, marketer, django_capture_on_commit_callbacks):
    from django.utils import timezone

    from deliveries.sending import claim_chunk

    d = ready_delivery(audience=make_audience(make_profiles([f"c{i}@example.com" for i in range(25)])))
    with django_capture_on_commit_callbacks(execute=False):
        delivery_confirm(delivery=d, user=marketer)  # sending (a claim takes nothing otherwise), no batch run
    now = timezone.now()
    sizes, seen = [], set()
    while rows := claim_chunk(delivery=d, lo=0, hi=10**12, limit=10, now=now):
        sizes.append(len(rows))
        ids = {r.id for r in rows}
        assert not ids & seen
        seen |= ids
    assert sizes == [10, 10, 5]
    assert SendingLog.objects.filter(delivery=d, status="sending").count() == 25


def test_logical_status_warning_for_prepared_with_warnings_or_an_open_alert(ready_delivery, marketer, client):
    from django.urls import reverse

    from deliveries.models import Delivery, LogicalStatus
    from deliveries.selectors import delivery_list, delivery_status_counts
    from deliveries.services import delivery_alert_flag_set

    warned = ready_delivery(html="<p>no unsubscribe link</p>")
    clean = ready_delivery()
    assert (warned.logical_status, clean.logical_status) == (LogicalStatus.WARNING, LogicalStatus.EDITING)
    Delivery.objects.filter(pk=clean.pk).update(state=State.FINISHED)
    delivery_alert_flag_set(delivery_id=clean.pk, open_alert=True)
    assert Delivery.objects.get(pk=clean.pk).logical_status == LogicalStatus.WARNING
    assert set(delivery_list(status="warning").values_list("pk", flat=True)) == {warned.pk, clean.pk}
    assert delivery_status_counts() == {"all": 2, "archived": 0, "editing": 0, "in_progress": 0, "finished": 0, "warning": 2, "erroneous": 0}
    delivery_alert_flag_set(delivery_id=clean.pk, open_alert=False)
    assert list(delivery_list(status="finished").values_list("pk", flat=True)) == [clean.pk]
    client.force_login(marketer)
    html = client.get(reverse("deliveries:list") + "?status=warning").content.decode()
    assert warned.label in html and 'class="status warning"' in html


def test_tick_reaps_dead_claims_and_re_enqueues_a_stalled_send(ready_delivery, marketer, settings, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.core import mail
    from django.utils import timezone

    from deliveries.models import Delivery
    from deliveries.sending import deliveries_tick

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    d = ready_delivery()
    long_ago = timezone.now() - timedelta(hours=1)
    Delivery.objects.filter(pk=d.pk).update(state=State.IN_PROGRESS, started_at=long_ago)
    first = SendingLog.objects.filter(delivery=d).order_by("id").first()
    # a worker died while sending this row an hour ago: never resent automatically
    SendingLog.objects.filter(pk=first.pk).update(status="sending", claimed_at=long_ago)
    report = deliveries_tick()
    assert report["reaped"] == 1
    first.refresh_from_db()
    assert first.status == "unknown"
    assert d.journal.filter(level="warning", text__startswith="1 message in an unknown state").exists()
    # the other four were pending with no task left: they are sent, once
    d.refresh_from_db()
    assert d.state == State.FINISHED and len(mail.outbox) == 4
    assert {parseaddr(m.to[0])[1] for m in mail.outbox} == set(SendingLog.objects.filter(delivery=d, status="sent").values_list("address", flat=True))
    assert deliveries_tick()["redispatched"] == 0


def test_the_reconciler_re_enqueues_a_send_whose_tasks_were_lost(ready_delivery, settings):
    from datetime import timedelta

    from django.core import mail
    from django.utils import timezone

    from deliveries.models import Delivery
    from deliveries.sending import deliveries_tick

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    d = ready_delivery()
    # its two batch tasks were enqueued, then lost with the broker: nothing ends them
    Delivery.objects.filter(pk=d.pk).update(state=State.IN_PROGRESS, started_at=timezone.now() - timedelta(hours=1), batches_open=2)
    assert deliveries_tick()["redispatched"] == 1
    d.refresh_from_db()
    assert d.state == State.FINISHED and len(mail.outbox) == 5
    assert d.journal.filter(text__startswith="The send had stalled").count() == 1
    assert deliveries_tick()["redispatched"] == 0


def test_the_hourly_rate_limit_paces_the_send_across_batches(ready_delivery, marketer, settings, django_capture_on_commit_callbacks):
    from unittest import mock

    from django.core import mail

    from deliveries.sending import send_batch

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    d = ready_delivery(audience=make_audience(make_profiles([f"r{i}@example.com" for i in range(30)])), rate_limit_per_hour=600)
    with mock.patch("deliveries.sending.dispatch_later") as later, django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    # 600 per hour = 10 per minute: the first pass sends 10 and schedules itself again
    assert len(mail.outbox) == 10
    later.assert_called_once()
    assert later.call_args.kwargs == {"delivery_id": d.pk, "seconds": 10}
    d.refresh_from_db()
    assert d.state == State.IN_PROGRESS and SendingLog.objects.filter(delivery=d, status="pending").count() == 20
    with mock.patch("deliveries.sending.dispatch_later"):
        assert send_batch(delivery_id=d.pk, lo=0, hi=10**12) == 0  # same minute: nothing more goes
    assert len(mail.outbox) == 10


def test_a_profile_that_no_longer_renders_fails_alone_and_the_send_goes_on(ready_delivery, marketer, smtp_server, django_capture_on_commit_callbacks):
    from audiences.models import Profile, Quarantine

    profiles = make_profiles([{"email": f"d{i}@example.com", "attributes": {"n": i + 1}} for i in range(4)])
    d = ready_delivery(audience=make_audience(profiles), html="<p>{{ 100 // attributes.n }} {{ unsubscribe_url }}</p>")
    assert d.state == State.READY
    Profile.objects.filter(pk=profiles[1].pk).update(attributes={"n": 0})  # changed after preparation
    with django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.FINISHED and (d.sent_count, d.failed_count) == (3, 1)
    broken = SendingLog.objects.get(delivery=d, address="d1@example.com")
    assert broken.status == "failed" and broken.failure_text.startswith("Personalization failed for this recipient: ZeroDivisionError")
    assert not Quarantine.objects.filter(address="d1@example.com").exists()  # not the address's fault
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == ["d0@example.com", "d2@example.com", "d3@example.com"]


def test_a_connection_cut_after_the_message_went_out_leaves_it_unknown_never_resent(ready_delivery, marketer, smtp_server, django_capture_on_commit_callbacks):
    """The relay took the message, then the connection was cut before its reply: it may have been
    delivered, so it is not sent again (no duplicate); the others go on over a fresh connection."""
    from audiences.models import Quarantine

    smtp_server.drop_after_data("person1@example.com")
    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    d.refresh_from_db()
    log = SendingLog.objects.get(delivery=d, address="person1@example.com")
    assert log.status == "unknown" and "may or may not have been delivered" in log.failure_text
    assert len(smtp_server.received_by("person1@example.com")) == 1  # received once, not resent
    assert d.state == State.FINISHED and (d.sent_count, d.failed_count, d.processed_count) == (4, 0, 5)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [f"person{i}@example.com" for i in range(5)]
    assert d.journal.filter(level="warning", text__startswith="1 message in an unknown state: the connection").exists()
    assert not Quarantine.objects.filter(address="person1@example.com").exists()


def test_an_idle_connection_the_relay_closed_hands_the_message_to_another_connection(smtp_server):
    """The connection goes away while idle (before anything of the message went out): the client
    says nothing reached the relay (content_sent is False), and a fresh connection sends it once."""
    import asyncio

    from deliveries.channels.smtp import AsyncRelayClient, RelayConfig

    relay = RelayConfig(host=smtp_server.host, port=smtp_server.port)
    data = b"Subject: hi\r\n\r\nHello\r\n"

    async def scenario():
        client = await AsyncRelayClient.open(relay)
        client.writer.transport.abort()  # the connection went away while it sat idle
        await asyncio.sleep(0)
        with pytest.raises((ConnectionError, OSError)):
            await client.transaction("news@shop.example.com", "ann@example.com", data)
        assert client.content_sent is False  # so the engine puts the message back, never "unknown"
        fresh = await AsyncRelayClient.open(relay)
        outcome = await fresh.transaction("news@shop.example.com", "ann@example.com", data)
        await fresh.quit()
        return outcome

    outcome = asyncio.run(scenario())
    assert outcome.ok and not outcome.unknown
    assert len(smtp_server.received_by("ann@example.com")) == 1


def test_when_the_validity_period_ends_the_logs_still_waiting_fail_and_the_send_ends(ready_delivery, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from deliveries.models import Delivery
    from deliveries.sending import deliveries_tick

    d = ready_delivery()
    now = timezone.now()
    # Sent to four; the fifth refused softly (mailbox full), its next attempt in an hour; the
    # validity period (84 h) ends before that attempt.
    SendingLog.objects.filter(delivery=d).exclude(address="person2@example.com").update(status="sent", event_at=now - timedelta(hours=84))
    SendingLog.objects.filter(delivery=d, address="person2@example.com").update(
        status="pending", attempts=6, failure_type="soft", failure_reason="mailbox_full", failure_text="452 4.2.2 Mailbox full",
        next_attempt_at=now + timedelta(hours=1),
    )  # fmt: skip
    Delivery.objects.filter(pk=d.pk).update(state=State.RETRY_PENDING, started_at=now - timedelta(hours=85), sent_count=4, processed_count=4)
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_tick()["expired"] == 1
    d.refresh_from_db()
    log = SendingLog.objects.get(delivery=d, address="person2@example.com")
    assert (log.status, log.failure_type, log.failure_reason, log.failure_text) == ("failed", "soft", "mailbox_full", "452 4.2.2 Mailbox full")
    assert d.state == State.FINISHED and (d.sent_count, d.failed_count, d.processed_count) == (4, 1, 5)
    assert d.journal.filter(level="warning", text="1 message not sent: the validity period (84 h) ended.").exists()
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_tick()["expired"] == 0  # once


def test_a_send_paused_past_its_validity_sends_nothing_more_when_resumed(ready_delivery, marketer, smtp_server, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from deliveries.models import Delivery
    from deliveries.sending import deliveries_tick

    d = ready_delivery()
    Delivery.objects.filter(pk=d.pk).update(state=State.PAUSED, started_at=timezone.now() - timedelta(days=4))
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_tick()["expired"] == 5
        assert Delivery.objects.get(pk=d.pk).state == State.PAUSED  # still the person's to resume
        delivery_resume(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.FAILED and smtp_server.messages == []  # nothing sent after its validity
    assert set(SendingLog.objects.filter(delivery=d).values_list("status", "failure_text")) == {
        ("failed", "Not sent: the validity period of the send ended.")
    }
