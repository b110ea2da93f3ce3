"""A real send: real Celery worker, real SMTP server, soft and hard refusals, retries."""

import time
from datetime import timedelta

import pytest

from audiences.models import Quarantine
from deliveries.models import Delivery, SendingLog, State
from deliveries.services import delivery_confirm, delivery_prepare
from tests.deliveries.conftest import HTML, make_audience, make_profiles

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def wait_for_state(pk, states, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = Delivery.objects.get(pk=pk)
        if d.state in states:
            return d
        time.sleep(0.2)
    raise AssertionError(f"still {Delivery.objects.get(pk=pk).state} after {timeout}s: {list(Delivery.objects.get(pk=pk).journal.values_list('text', flat=True))}")


def test_200_recipients_with_hard_soft_and_transient_refusals(celery_worker, smtp_server, marketer, settings):
    settings.RETRY_BACKOFF_SECONDS = [1]
    settings.SEND_CHUNK = 20
    emails = [f"user{i:03d}@example.com" for i in range(200)]
    hard = emails[:10]
    always_soft = emails[10:20]
    once_soft = emails[20:30]
    for a in hard:
        smtp_server.set_reply(a, "550 5.1.1 User unknown")
    for a in always_soft:
        smtp_server.set_reply(a, "452 4.2.2 Mailbox full")
    for a in once_soft:
        smtp_server.set_reply(a, "452 4.2.2 Mailbox full", times=1)
    profiles = make_profiles([{"email": e, "first_name": f"Name{i}"} for i, e in enumerate(emails)])
    from deliveries.services import delivery_create

    d = delivery_create(
        user=marketer,
        data={"label": "Integration", "sender_name": "Shop", "sender_address": "news@shop.example.com",
              "subject": "Hi {{ first_name }}", "html": HTML, "audience": make_audience(profiles),
              "validity": timedelta(seconds=8)},  # fmt: skip
    )
    delivery_prepare(delivery=d, user=marketer)
    d = wait_for_state(d.pk, {State.READY, State.PREPARATION_FAILED})
    assert d.state == State.READY and d.to_deliver_count == 200
    delivery_confirm(delivery=d, user=marketer)
    d = wait_for_state(d.pk, {State.FINISHED, State.FAILED})
    assert d.state == State.FINISHED

    logs = {log.address: log for log in SendingLog.objects.filter(delivery=d)}
    assert {log.status for log in logs.values()} == {"sent", "failed"}  # every log final
    for a in hard:
        assert (logs[a].status, logs[a].failure_type, logs[a].failure_reason) == ("failed", "hard", "user_unknown")
        assert logs[a].attempts == 1
    for a in always_soft:
        assert (logs[a].status, logs[a].failure_type, logs[a].failure_reason) == ("failed", "soft", "mailbox_full")
        assert logs[a].attempts >= 2  # retried inside the validity period, then failed at its end
    for a in once_soft:
        assert logs[a].status == "sent" and logs[a].attempts == 2
    accepted = [e for e in emails if e not in hard and e not in always_soft]
    assert len(accepted) == 180
    for i, address in enumerate(emails):
        got = smtp_server.received_by(address)
        if address in accepted:
            assert len(got) == 1, address
            assert f"Hello Name{i}," in got[0].message.get_body(preferencelist=("html",)).get_content()
        else:
            assert got == []
    assert (d.sent_count, d.failed_count, d.processed_count) == (180, 20, 200)
    statuses = dict(Quarantine.objects.filter(address__in=hard + always_soft + once_soft).values_list("address", "status"))
    assert all(statuses[a] == "quarantine" for a in hard)
    assert all(statuses[a] == "erroneous" for a in always_soft)
    assert d.journal.filter(text="Delivery finished (all messages have been processed).").count() == 1
    assert d.journal.filter(text__startswith="Pass done:").exists()


def test_one_percent_soft_bounces_never_stall_the_first_pass(celery_worker, smtp_server, marketer, settings):
    """Issue: with the default backoff and 1% of recipients answering 452, a 5,000-recipient send
    stopped after 994 sent ("Pass done: 4006 messages will be retried" while 6 had failed), and the
    journal wrote dozens of pass lines. Now every row never tried is sent in the first pass, and the
    pass ends once, with the true count."""
    from deliveries.services import delivery_create

    assert settings.RETRY_BACKOFF_SECONDS[0] == 900  # the default: 15 minutes before a retry
    settings.SEND_CHUNK, settings.SEND_BATCH = 50, 300  # several batches, as a big send has
    emails = [f"r{i:04d}@example.com" for i in range(2000)]
    soft = emails[7::100]  # 1%, spread over every batch
    for a in soft:
        smtp_server.set_reply(a, "452 4.2.2 Mailbox full")
    d = delivery_create(
        user=marketer,
        data={"label": "No stall", "sender_name": "Shop", "sender_address": "news@shop.example.com", "subject": "Hi",
              "html": HTML, "audience": make_audience(make_profiles(emails))},  # fmt: skip
    )
    delivery_prepare(delivery=d, user=marketer)
    d = wait_for_state(d.pk, {State.READY})
    delivery_confirm(delivery=d, user=marketer)
    d = wait_for_state(d.pk, {State.RETRY_PENDING, State.FINISHED, State.FAILED}, timeout=120)
    assert d.state == State.RETRY_PENDING
    assert SendingLog.objects.filter(delivery=d, attempts=0).count() == 0  # no row left untried
    assert (d.sent_count, d.failed_count) == (1980, 0)
    waiting = SendingLog.objects.filter(delivery=d, status="pending")
    assert sorted(waiting.values_list("address", flat=True)) == soft
    lines = list(d.journal.filter(text__startswith="Pass done").values_list("text", flat=True))
    assert len(lines) == 1 and lines[0].startswith("Pass done: 20 messages will be retried from ")
    assert not d.journal.filter(text__startswith="Retry pass").exists()
    assert sum(len(smtp_server.received_by(a)) for a in emails) == 1980  # each accepted message once
