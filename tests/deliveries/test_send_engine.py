"""The send engine against real SMTP servers on loopback: many connections, RFC 2920 pipelining,
STARTTLS and AUTH, consent at send time, relays that refuse connections, outcomes that hold their
claim. The messages the server received are the truth every test checks against."""

import asyncio
from collections import Counter
from datetime import timedelta
from email.utils import parseaddr

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audiences.models import Profile, Quarantine
from audiences.services import profile_denylist_set
from deliveries.models import Delivery, ExclusionLog, SendingLog, State
from deliveries.selectors import delivery_left_since_preparation, delivery_left_since_preparation_by_cause
from deliveries.services import delivery_confirm

from .conftest import make_audience, make_profiles, quarantine

pytestmark = pytest.mark.django_db


def send(d, user, capture):
    with capture(execute=True):
        delivery_confirm(delivery=d, user=user)
    d.refresh_from_db()
    return d


def received(server) -> Counter:
    return Counter(address for m in server.messages for address in m.rcpt_tos)


# --- pipelining, TLS, AUTH -------------------------------------------------------------------------
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining relay", "plain relay"])
def test_both_kinds_of_relay_get_each_accepted_message_once_and_the_same_outcomes(
    pipelining, ready_delivery, marketer, smtp_server_with, settings, django_capture_on_commit_callbacks
):
    server = smtp_server_with(pipelining=pipelining)
    settings.SEND_CONNECTIONS = 3
    emails = [f"p{i:02d}@example.com" for i in range(12)]
    server.set_reply("p03@example.com", "550 5.1.1 User unknown")
    server.set_reply("p07@example.com", "452 4.2.2 Mailbox full")
    d = send(ready_delivery(audience=make_audience(make_profiles(emails))), marketer, django_capture_on_commit_callbacks)
    assert received(server) == Counter({e: 1 for e in emails if e not in ("p03@example.com", "p07@example.com")})
    logs = {log.address: log for log in SendingLog.objects.filter(delivery=d)}
    assert (logs["p03@example.com"].status, logs["p03@example.com"].failure_type, logs["p03@example.com"].failure_reason) == ("failed", "hard", "user_unknown")
    assert (logs["p07@example.com"].status, logs["p07@example.com"].failure_reason) == ("pending", "mailbox_full")  # retried later
    assert logs["p07@example.com"].next_attempt_at is not None and logs["p07@example.com"].attempts == 1
    assert (d.sent_count, d.failed_count, d.processed_count, d.state) == (10, 1, 11, State.RETRY_PENDING)
    assert Quarantine.objects.get(address="p03@example.com").status == Quarantine.Status.QUARANTINE
    # after a refused recipient the connection was reset, and the next message on it went through
    assert all(m.data.count(b"Message-ID:") == 1 for m in server.messages)


@pytest.mark.parametrize("pipelining", [True, False])
def test_the_client_writes_the_envelope_in_one_go_only_where_the_relay_pipelines(pipelining, smtp_server_with):
    from deliveries.channels.smtp import AsyncRelayClient, RelayConfig

    server = smtp_server_with(pipelining=pipelining)
    writes = []

    async def scenario():
        client = await AsyncRelayClient.open(RelayConfig(host=server.host, port=server.port))
        write = client.writer.write
        client.writer.write = lambda data: (writes.append(bytes(data)), write(data))[1]
        outcome = await client.transaction("news@shop.example.com", "ann@example.com", b"Subject: hi\r\n\r\nHello\r\n")
        await client.quit()
        return client.pipelining, outcome

    advertised, outcome = asyncio.run(scenario())
    assert advertised is pipelining and outcome.ok
    envelope = [w for w in writes if w.startswith(b"MAIL FROM")]
    if pipelining:  # MAIL, RCPT and DATA in one write; then the content with its final dot
        assert envelope == [b"MAIL FROM:<news@shop.example.com>\r\nRCPT TO:<ann@example.com>\r\nDATA\r\n"]
    else:  # one command per write, each after its reply
        assert envelope == [b"MAIL FROM:<news@shop.example.com>\r\n"]
        assert b"RCPT TO:<ann@example.com>\r\n" in writes and b"DATA\r\n" in writes
    assert len(server.received_by("ann@example.com")) == 1


@pytest.mark.parametrize("eight_bit_mime", [True, False], ids=["relay with 8BITMIME", "relay without"])
def test_text_that_is_not_ascii_goes_8bit_where_the_relay_takes_it_and_quoted_printable_elsewhere(
    eight_bit_mime, ready_delivery, marketer, smtp_server_with, django_capture_on_commit_callbacks
):
    server = smtp_server_with(eight_bit_mime=eight_bit_mime)
    html = '<p>Café crème · {{ first_name }} — 10 €</p><p><a href="{{ unsubscribe_url }}">Désabonnement</a></p>'
    d = send(ready_delivery(html=html), marketer, django_capture_on_commit_callbacks)
    assert d.state == State.FINISHED and len(server.messages) == 5
    for m in server.messages:
        parts = {p.get_content_type(): p for p in m.message.walk() if not p.is_multipart()}
        assert "Café crème · First" in parts["text/html"].get_content() and "10 €" in parts["text/plain"].get_content()
        encodings = {p["Content-Transfer-Encoding"] for p in parts.values()}
        assert encodings == ({"8bit"} if eight_bit_mime else {"quoted-printable"})
        assert ("BODY=8BITMIME" in m.mail_options) is eight_bit_mime


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining relay", "plain relay"])
def test_starttls_and_login_as_email_url_asks(pipelining, ready_delivery, marketer, smtp_server_with, django_capture_on_commit_callbacks):
    server = smtp_server_with(starttls=True, auth=("relay-user", "s3cret"), pipelining=pipelining)
    d = send(ready_delivery(), marketer, django_capture_on_commit_callbacks)
    assert d.state == State.FINISHED and d.sent_count == 5
    assert len(server.messages) == 5
    assert all(m.tls and m.login == "relay-user" for m in server.messages)  # encrypted, authenticated


def test_a_relay_that_refuses_our_login_fails_no_message_and_the_journal_says_why(
    ready_delivery, marketer, smtp_server_with, settings, django_capture_on_commit_callbacks
):
    server = smtp_server_with(starttls=True, auth=("relay-user", "s3cret"))
    settings.EMAIL_HOST_PASSWORD = "wrong"
    settings.SEND_RELAY_DOWN_SECONDS, settings.SEND_RELAY_RETRY_SECONDS = 1, 600
    d = send(ready_delivery(), marketer, django_capture_on_commit_callbacks)
    assert server.messages == []
    assert d.state == State.RETRY_PENDING and (d.sent_count, d.failed_count, d.processed_count) == (0, 0, 0)
    logs = SendingLog.objects.filter(delivery=d)
    assert {(log.status, log.failure_reason) for log in logs} == {("pending", "unreachable")}
    assert all(log.next_attempt_at > timezone.now() + timedelta(minutes=9) for log in logs)
    assert not Quarantine.objects.exists()  # the relay's refusal says nothing about the addresses
    line = d.journal.get(text__startswith="The mail relay could not be reached")
    assert "refused the login of 'relay-user'" in line.text and "5 messages will be tried again from" in line.text


# --- consent at send time ----------------------------------------------------------------------
def test_recipients_who_left_since_preparation_are_not_sent_and_say_why(
    ready_delivery, marketer, smtp_server, client, django_capture_on_commit_callbacks
):
    profiles = make_profiles(["stay1@example.com", "Unsub@Example.com", "deny@example.com", "quar@example.com",
                              "gone@example.com", "stay2@example.com"])  # fmt: skip
    d = ready_delivery(audience=make_audience(profiles))
    assert d.to_deliver_count == 6
    # between preparation and the send:
    profile_denylist_set(profile_id=profiles[1].pk)  # unsubscribed (the profile's flag)
    quarantine("DENY@example.com", Quarantine.Status.DENYLIST)  # a complaint: the address on denylist
    quarantine("quar@example.com", Quarantine.Status.QUARANTINE)  # hard bounces elsewhere
    Profile.objects.filter(pk=profiles[4].pk).delete()  # deleted (GDPR erasure)
    assert delivery_left_since_preparation_by_cause(delivery=d) == {"denylist": 2, "quarantine": 1, "profile_deleted": 1}
    assert delivery_left_since_preparation(delivery=d) == 4  # what the Confirm send dialog says

    d = send(d, marketer, django_capture_on_commit_callbacks)
    assert received(smtp_server) == Counter({"stay1@example.com": 1, "stay2@example.com": 1})
    assert d.state == State.FINISHED and (d.to_deliver_count, d.skipped_count, d.sent_count, d.processed_count) == (2, 4, 2, 2)
    skipped = dict(SendingLog.objects.filter(delivery=d, status="skipped").values_list("address", "exclusion_cause"))
    assert skipped == {"Unsub@Example.com": "denylist", "deny@example.com": "denylist", "quar@example.com": "quarantine",
                       "gone@example.com": "profile_deleted"}  # fmt: skip
    texts = set(SendingLog.objects.filter(delivery=d, status="skipped").values_list("failure_text", flat=True))
    assert "Not sent: the recipient left since preparation (Profile deleted)." in texts
    found = ExclusionLog.objects.filter(delivery=d, found_at__isnull=False)
    assert sorted(found.values_list("cause", flat=True)) == ["denylist", "denylist", "profile_deleted", "quarantine"]

    from kpis.services import kpis_compute

    snapshot = kpis_compute(delivery_id=d.pk)
    assert (snapshot.to_deliver, snapshot.skipped, snapshot.delivered) == (2, 4, 2)
    client.force_login(marketer)
    block = client.get(reverse("kpis:deployment-kpis", args=[d.pk])).content.decode()
    assert "4 recipients left since preparation" in block


@pytest.mark.postgres
def test_claiming_a_chunk_is_one_statement_whatever_its_size(postgres_only, ready_delivery, marketer, django_capture_on_commit_callbacks):
    from deliveries.sending import claim_chunk, update_outcomes

    profiles = make_profiles([f"q{i:03d}@example.com" for i in range(120)])
    d = ready_delivery(audience=make_audience(profiles))
    with django_capture_on_commit_callbacks(execute=False):
        delivery_confirm(delivery=d, user=marketer)
    for p in profiles[3:5]:  # two of the first chunk unsubscribe meanwhile
        profile_denylist_set(profile_id=p.pk)
    d.refresh_from_db()
    for size, skipped in ((10, 2), (100, 0)):
        with CaptureQueriesContext(connection) as queries:
            rows = claim_chunk(delivery=d, lo=0, hi=10**12, limit=size, now=timezone.now())
        assert len(rows) == size - skipped and len(queries) == 1  # consent, exclusion logs, texts and counters included
        now = timezone.now()
        with CaptureQueriesContext(connection) as queries:
            written = update_outcomes(
                delivery_id=d.pk, rows=[(r.id, r.token, "sent", 1, now, None, "", "", "", "<x>") for r in rows]
            )
        assert written.sent == size - skipped and len(queries) == 1  # the logs and the delivery's counters together
    texts = set(SendingLog.objects.filter(delivery=d, status="skipped").values_list("failure_text", flat=True))
    assert texts == {"Not sent: the recipient left since preparation (Address on denylist)."}


def test_a_late_outcome_after_the_reaper_changes_nothing_and_counts_nothing(ready_delivery, marketer, django_capture_on_commit_callbacks):
    """A worker that was thought dead writes after the reaper marked its rows unknown: void."""
    from deliveries.sending import claim_chunk, deliveries_reap, update_outcomes

    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=False):
        delivery_confirm(delivery=d, user=marketer)
    d.refresh_from_db()
    rows = claim_chunk(delivery=d, lo=0, hi=10**12, limit=2, now=timezone.now() - timedelta(hours=1))
    assert deliveries_reap() == 2  # ...and the other three, left without a batch, are sent
    written = update_outcomes(delivery_id=d.pk, rows=[(r.id, r.token, "sent", 1, timezone.now(), None, "", "", "", "") for r in rows])
    assert (written.sent, written.failed, written.unknown) == (0, 0, 0)
    d.refresh_from_db()
    assert (d.sent_count, d.processed_count, d.state) == (3, 5, State.FINISHED)  # nothing counted twice
    assert set(SendingLog.objects.filter(pk__in=[r.id for r in rows]).values_list("status", flat=True)) == {"unknown"}
    assert {parseaddr(m.to[0])[1] for m in mail.outbox}.isdisjoint({r.address for r in rows})  # never resent


# --- relays that refuse connections ----------------------------------------------------------------
def test_a_relay_that_takes_fewer_connections_than_we_open_costs_no_message(
    ready_delivery, marketer, smtp_server, settings, django_capture_on_commit_callbacks
):
    smtp_server.max_connections = 2  # "421 Too many connections" beyond two
    settings.SEND_CONNECTIONS = 6
    emails = [f"c{i:02d}@example.com" for i in range(40)]
    d = send(ready_delivery(audience=make_audience(make_profiles(emails))), marketer, django_capture_on_commit_callbacks)
    assert smtp_server.refused_connections > 0 and smtp_server.peak_sessions == 2
    assert received(smtp_server) == Counter({e: 1 for e in emails})
    assert d.state == State.FINISHED and (d.sent_count, d.failed_count) == (40, 0)
    assert not Quarantine.objects.exists()


def test_a_relay_that_refuses_every_connection_for_a_while_delays_the_send_and_fails_nothing(
    ready_delivery, marketer, smtp_server, settings, django_capture_on_commit_callbacks
):
    import threading

    settings.SEND_CONNECTIONS = 3
    smtp_server.refuse_connections = True  # "421 Service not available" to everyone...
    threading.Timer(1.5, lambda: setattr(smtp_server, "refuse_connections", False)).start()  # ...for 1.5 s
    d = send(ready_delivery(), marketer, django_capture_on_commit_callbacks)
    assert smtp_server.refused_connections >= 3
    assert d.state == State.FINISHED and (d.sent_count, d.failed_count) == (5, 0)
    assert received(smtp_server) == Counter({f"person{i}@example.com": 1 for i in range(5)})


def test_a_relay_down_longer_than_the_patience_hands_the_rows_back_for_later(
    ready_delivery, marketer, smtp_server, settings, django_capture_on_commit_callbacks
):
    from deliveries.sending import dispatch

    settings.SEND_RELAY_DOWN_SECONDS, settings.SEND_RELAY_RETRY_SECONDS = 1, 120
    smtp_server.refuse_connections = True
    d = send(ready_delivery(), marketer, django_capture_on_commit_callbacks)
    assert d.state == State.RETRY_PENDING and smtp_server.messages == []
    assert set(SendingLog.objects.filter(delivery=d).values_list("status", "failure_reason", "attempts")) == {("pending", "unreachable", 0)}
    assert d.journal.filter(text__contains="421 4.7.0 Service not available").exists()
    # the relay is back when the retry time comes (the tick dispatches it)
    smtp_server.refuse_connections = False
    SendingLog.objects.filter(delivery=d).update(next_attempt_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        dispatch(delivery_id=d.pk)
    d.refresh_from_db()
    assert d.state == State.FINISHED and d.sent_count == 5 and d.failed_count == 0
    assert received(smtp_server) == Counter({f"person{i}@example.com": 1 for i in range(5)})


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_connection_cap_per_relay_holds_across_batches_running_at_once(postgres_only, ready_delivery, marketer, smtp_server, settings):
    """Two batches at once (as two worker processes would run them), 6 connections each, a cap of 3
    per relay: the relay never sees more than 3 (advisory locks on PostgreSQL)."""
    import threading

    from deliveries.sending import send_batch

    settings.SEND_CONNECTIONS, settings.SEND_MAX_CONNECTIONS_PER_RELAY, settings.SEND_CHUNK = 6, 3, 10
    emails = [f"k{i:03d}@example.com" for i in range(80)]
    d = ready_delivery(audience=make_audience(make_profiles(emails)))
    Delivery.objects.filter(pk=d.pk).update(state=State.IN_PROGRESS, started_at=timezone.now(), batches_open=2)
    ids = sorted(SendingLog.objects.filter(delivery=d).values_list("id", flat=True))
    halves = [(ids[0], ids[39]), (ids[40], ids[-1])]

    def run(lo, hi):
        try:
            send_batch(delivery_id=d.pk, lo=lo, hi=hi)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=half) for half in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert smtp_server.peak_sessions <= 3
    assert received(smtp_server) == Counter({e: 1 for e in emails})
    d.refresh_from_db()
    assert d.state == State.FINISHED and d.sent_count == 80


# --- passes ---------------------------------------------------------------------------------------
def test_a_soft_bounce_never_holds_rows_that_were_never_tried(ready_delivery, marketer, django_capture_on_commit_callbacks):
    """The first batch to end sees a soft failure waiting for its retry and rows of another batch
    never tried: the send stays in progress (no "Pass done" while rows wait to be sent)."""
    from deliveries.sending import pass_end

    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=False):
        delivery_confirm(delivery=d, user=marketer)
    logs = list(SendingLog.objects.filter(delivery=d).order_by("id"))
    SendingLog.objects.filter(pk=logs[0].pk).update(status="pending", attempts=1, next_attempt_at=timezone.now() + timedelta(minutes=15))
    SendingLog.objects.filter(pk=logs[1].pk).update(status="sent", attempts=1)
    Delivery.objects.filter(pk=d.pk).update(batches_open=1)  # the other batch is still queued
    assert pass_end(delivery_id=d.pk) is None
    d.refresh_from_db()
    assert d.state == State.IN_PROGRESS and not d.journal.filter(text__startswith="Pass done").exists()
    # once every other row is final, the pass ends with the true count
    SendingLog.objects.filter(pk__in=[log.pk for log in logs[2:]]).update(status="sent", attempts=1)
    with django_capture_on_commit_callbacks(execute=False):
        assert pass_end(delivery_id=d.pk) == State.RETRY_PENDING
    assert d.journal.filter(text__startswith="Pass done: 1 message will be retried from ").count() == 1


# --- rendering ------------------------------------------------------------------------------------
def test_each_expression_once_renders_exactly_what_the_whole_templates_render():
    from deliveries.personalization import compile_content, render_with_missing
    from deliveries.rendering import flat_renderer

    subject = "{{ first_name }}, news for {{ attributes.city|default('you') }} & co"
    html = ("<h1>Hi {{ first_name|title }} &amp; {{ last_name }}</h1><p>{{ attributes.note }} {{ attributes.city|default('you') }}"
            "</p><a href=\"{{ tracking }}\">x</a> {{ missing }} {{ 3 * 7 }}\n")  # fmt: skip
    renderer = flat_renderer(subject=subject, html=html, text="")
    assert renderer is not None and renderer.count == 8  # 10 in the subject and HTML (20 with the text), 8 distinct
    compiled = compile_content(subject=subject, html=html, text="")
    for ctx in (
        {"first_name": "ann <b>", "last_name": "O'Neil & \"Co\"", "attributes": {"note": "5 > 3 & <i>x</i>", "city": "Paris"}, "tracking": "https://t/x?a=1&b=2"},
        {"first_name": "bob", "attributes": {}, "tracking": "t"},
    ):
        expected = [render_with_missing(t, ctx) for t in (compiled.subject, compiled.html, compiled.text)]
        got_subject, got_html, got_text, missing = renderer.render(ctx)
        assert (got_subject, got_html, got_text) == (expected[0][0], expected[1][0], expected[2][0])
        assert missing == expected[0][1] | expected[1][1] | expected[2][1]
    assert flat_renderer(subject="x", html="{% if a %}b{% endif %}", text="") is None  # blocks: rendered whole


def test_building_a_message_reads_no_randomness_from_the_os(ready_delivery, monkeypatch):
    """The Message-ID is made of the log id and a nonce drawn once per batch, not per message."""
    import os

    from deliveries.channels.email import MessageSkeleton

    d = ready_delivery()
    skeleton = MessageSkeleton(d)
    monkeypatch.setattr(os, "urandom", lambda n: (_ for _ in ()).throw(AssertionError("os.urandom per message")))
    ids = [skeleton.build(sending_log_id=i, address=f"a{i}@example.com", profile={"first_name": "A"}).message_id for i in (1, 2)]
    assert ids[0] != ids[1] and ids[0].startswith(f"<{d.pk}.1.") and ids[0].endswith("@shop.example.com>")


def test_a_batch_ends_itself_before_its_time_limit_and_the_pass_goes_on(ready_delivery, marketer, smtp_server, settings, django_capture_on_commit_callbacks):
    """Past 80% of SEND_BATCH_TIME_LIMIT a batch claims no more, writes what it holds and ends; the
    end of the pass enqueues the rest (Celery's soft limit never cuts a batch holding outcomes)."""
    settings.SEND_BATCH_TIME_LIMIT, settings.SEND_CHUNK = 0.001, 2
    d = send(ready_delivery(), marketer, django_capture_on_commit_callbacks)
    assert d.state == State.FINISHED and d.sent_count == 5
    assert received(smtp_server) == Counter({f"person{i}@example.com": 1 for i in range(5)})


def test_a_preparation_whose_worker_died_fails_and_says_so(new_delivery, settings):
    from deliveries.services import deliveries_fail_stuck_preparations

    d = new_delivery()
    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING, updated_at=timezone.now() - timedelta(hours=2))
    fresh = new_delivery(label="Preparing now")
    Delivery.objects.filter(pk=fresh.pk).update(state=State.PREPARING)
    settings.PREPARATION_TIME_LIMIT = 3600
    assert deliveries_fail_stuck_preparations() == 1
    d.refresh_from_db()
    assert d.state == State.PREPARATION_FAILED
    assert d.journal.filter(level="critical", text__startswith="The preparation stopped without finishing").exists()
    assert Delivery.objects.get(pk=fresh.pk).state == State.PREPARING  # one that runs is left alone


def test_a_profile_row_gone_without_the_orm_counts_as_deleted(ready_delivery, marketer, smtp_server, django_capture_on_commit_callbacks):
    """The sending log keeps no database constraint on its profile (preparation's speed): a profile
    removed by other means (a DBA's DELETE, a restore) leaves a dangling id, judged 'Profile deleted'."""
    profiles = make_profiles(["keep@example.com", "gone@example.com"])
    d = ready_delivery(audience=make_audience(profiles))
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audiences_audiencemember WHERE profile_id = %s", [profiles[1].pk])
        cursor.execute("DELETE FROM audiences_profile WHERE id = %s", [profiles[1].pk])
    assert delivery_left_since_preparation_by_cause(delivery=d) == {"profile_deleted": 1}
    d = send(d, marketer, django_capture_on_commit_callbacks)
    assert received(smtp_server) == Counter({"keep@example.com": 1})
    assert SendingLog.objects.get(delivery=d, address="gone@example.com").exclusion_cause == "profile_deleted"
