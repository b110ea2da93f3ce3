"""Hits held by the web process and written in bulk (tracking/buffer.py, PostgreSQL).

The WSGI fast path (config.wsgi) answers the pixel and the click at once; the process's buffer
writes the hits a moment later. Each test checks what a marketer would see in the tracking logs
and the first open / click times, and that nothing is lost or written twice.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deliveries.tokens import make_token
from tests.tracking.test_wsgi import call
from tracking import buffer as buffers
from tracking.buffer import BufferedHit, HitBuffer, hits_write
from tracking.models import TrackingLog
from tracking.views import GIF

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres_only")]
SALE, NEW, FAQ = "https://shop.example.com/sale", "https://shop.example.com/new", "https://shop.example.com/faq"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def buffered(settings):
    """The fast path with a buffer that writes only when told (no thread racing the test)."""
    settings.TRACKING_BUFFER_SECONDS = 3600
    buffer = HitBuffer(interval=3600, rows=10_000, limit=10_000, background=False)
    buffers._buffer = buffer
    return buffer


def hit(log, *, at=None, kind="open", url=None, ua=BROWSER, reason=""):
    return BufferedHit(at or timezone.now(), log.pk, kind, url.pk if url else None, url.delivery_id if url else None, ua, "", reason)


def test_pixel_and_click_answer_at_once_and_the_flush_writes_them(buffered, make_sent):
    sent = make_sent()
    status, headers, body = call(sent.open_path())
    assert (status, headers["Content-Type"], body) == (200, "image/gif", GIF)
    status, headers, _ = call(sent.click_path(SALE))
    assert (status, headers["Location"]) == (302, SALE)
    assert TrackingLog.objects.count() == 0 and buffered.held() == 2  # answered before anything is written

    assert buffered.flush() == 2
    assert sorted(TrackingLog.objects.values_list("kind", "is_machine", "tracked_url__url")) == [
        ("click", False, SALE),
        ("open", False, None),
    ]
    log = sent.refresh().log
    assert log.first_open_at is not None and log.first_click_at is not None
    assert buffered.flush() == 0  # nothing written twice


def test_bad_and_unknown_tokens_are_answered_and_write_nothing(buffered, make_sent):
    sent, other = make_sent(), make_sent(email="bob@example.com")
    assert call("/t/o/garbage.gif")[:3:2] == (200, GIF)
    assert call(sent.open_path()[:-8] + "x.gif")[:3:2] == (200, GIF)  # truncated
    status, headers, body = call("/t/c/garbage")
    assert status == 404 and "Location" not in headers and b"This link is not valid" in body
    assert call(f"/t/c/{make_token(sent.log.pk, 10**9)}")[0] == 404  # a link that does not exist
    assert buffered.held() == 0

    # Well signed, but its sending log does not exist: answered, nothing written.
    assert call(f"/t/o/{make_token(10**9)}.gif")[:3:2] == (200, GIF)
    assert buffered.flush() == 0
    # A message's link with another message's sending log (never minted so): nothing written.
    assert hits_write([hit(other.log, kind="click", url=sent.urls[SALE])]) == 0
    assert TrackingLog.objects.count() == 0


def test_first_times_are_the_earliest_person_hit_whichever_flush_comes_first(make_sent):
    sent = make_sent()
    t0 = timezone.now() - timedelta(minutes=10)
    # Two processes: the later hits are written first.
    hits_write([hit(sent.log, at=t0 + timedelta(seconds=30)), hit(sent.log, at=t0 + timedelta(seconds=40), kind="click", url=sent.urls[SALE])])
    log = sent.refresh().log
    assert (log.first_open_at, log.first_click_at) == (t0 + timedelta(seconds=30), t0 + timedelta(seconds=40))
    hits_write([hit(sent.log, at=t0), hit(sent.log, at=t0 + timedelta(seconds=5), kind="click", url=sent.urls[NEW])])
    log = sent.refresh().log
    assert (log.first_open_at, log.first_click_at) == (t0, t0 + timedelta(seconds=5))
    hits_write([hit(sent.log, at=t0 + timedelta(minutes=5))])  # a later open changes nothing
    assert sent.refresh().log.first_open_at == t0
    assert TrackingLog.objects.filter(sending_log=sent.log).count() == 5


def test_machine_hits_are_flagged_in_bulk_and_set_no_first_time(make_sent):
    just_sent = make_sent(sent_ago=timedelta(seconds=0))
    scanned = make_sent(email="bob@example.com")
    hits_write(
        [
            hit(just_sent.log),  # within 2 s of delivery
            hit(scanned.log, kind="click", url=scanned.urls[SALE], ua="Barracuda Sentinel", reason="Known scanner: Barracuda Link Protection"),
        ]
    )  # fmt: skip
    reasons = dict(TrackingLog.objects.values_list("sending_log_id", "machine_reason"))
    assert reasons == {just_sent.log.pk: "Within 2 s of delivery", scanned.log.pk: "Known scanner: Barracuda Link Protection"}
    assert set(TrackingLog.objects.values_list("is_machine", flat=True)) == {True}
    assert just_sent.refresh().log.first_open_at is None
    assert scanned.refresh().log.first_open_at is None and scanned.log.first_click_at is None


def test_a_burst_split_across_processes_is_flagged_and_first_times_recomputed(make_sent):
    sent = make_sent()
    t0 = timezone.now() - timedelta(minutes=10)
    # Three links clicked within a second, noted by three processes, written last-click first.
    hits_write([hit(sent.log, at=t0 + timedelta(milliseconds=600), kind="click", url=sent.urls[FAQ])])
    hits_write([hit(sent.log, at=t0 + timedelta(milliseconds=300), kind="click", url=sent.urls[NEW])])
    assert sent.refresh().log.first_click_at == t0 + timedelta(milliseconds=300)  # two links: still a person
    hits_write([hit(sent.log, at=t0, kind="click", url=sent.urls[SALE])])

    clicks = TrackingLog.objects.filter(sending_log=sent.log)
    assert set(clicks.values_list("is_machine", "machine_reason")) == {(True, "3 links clicked within 1 s")}
    log = sent.refresh().log
    assert log.first_open_at is None and log.first_click_at is None  # KPIs count people only

    # A person's click a minute later stays human.
    hits_write([hit(sent.log, at=t0 + timedelta(minutes=1), kind="click", url=sent.urls[SALE])])
    assert sent.refresh().log.first_click_at == t0 + timedelta(minutes=1)


def test_hits_wait_through_a_database_outage_and_are_written_once_it_is_back(buffered, make_sent, caplog):
    sent = make_sent()
    call(sent.open_path())
    call(sent.click_path(SALE))
    # The buffer's connection is cut (a restart of PostgreSQL, a failover).
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    dsn = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in dsn.items() if k in ("dbname", "user", "host", "port", "password")}, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    assert buffered.flush() == 0
    assert buffered.held() == 2 and "kept for the next try" in caplog.text
    assert buffered.flush() == 2  # a fresh connection
    assert TrackingLog.objects.count() == 2 and buffered.held() == 0


def test_a_full_buffer_drops_new_hits_with_an_error_and_still_answers(settings, make_sent, caplog):
    settings.TRACKING_BUFFER_SECONDS = 3600
    buffers._buffer = buffer = HitBuffer(interval=3600, rows=100, limit=2, background=False)
    sent = make_sent()
    for _ in range(3):
        assert call(sent.open_path())[:3:2] == (200, GIF)
    assert (buffer.held(), buffer.dropped) == (2, 1)
    assert "tracking buffer full" in caplog.text and "1 hits dropped" in caplog.text
    assert buffer.flush() == 2


def test_the_thread_writes_within_the_interval(settings, make_sent):
    settings.TRACKING_BUFFER_SECONDS = 0.05
    sent = make_sent()
    call(sent.open_path())
    deadline = time.monotonic() + 10
    while not TrackingLog.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert TrackingLog.objects.count() == 1
    assert sent.refresh().log.first_open_at is not None


@pytest.mark.integration
def test_gunicorn_writes_what_it_holds_when_stopped_gracefully(make_sent):
    """A real gunicorn serving config.wsgi, holding hits for a minute: SIGTERM writes them."""
    sent = make_sent()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = django_settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "SECRET_KEY": django_settings.SECRET_KEY,
        "TRACKING_BUFFER_SECONDS": "60",
        "DEBUG": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "2", "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/t/o/warmup.gif", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for _ in range(3):
            request = urllib.request.Request(base + sent.open_path(), headers={"User-Agent": BROWSER})
            assert urllib.request.urlopen(request, timeout=5).read() == GIF
        assert TrackingLog.objects.count() == 0  # answered, and held by the workers (they write every 60 s)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert TrackingLog.objects.filter(sending_log=sent.log, kind="open").count() == 3
    assert sent.refresh().log.first_open_at is not None


def test_a_link_is_remembered_for_a_while_then_read_again(buffered, make_sent, monkeypatch):
    from deliveries.models import TrackedUrl
    from tracking import services

    sent = make_sent()
    monkeypatch.setattr(services, "_LINK_TTL", 0.0)  # remembered for no time: every click reads it again
    assert call(sent.click_path(SALE))[0] == 302
    TrackedUrl.objects.filter(pk=sent.url_id(SALE)).delete()  # the link is gone before the hit is written
    assert call(sent.click_path(SALE))[0] == 404

    other = make_sent(email="bob@example.com")
    monkeypatch.setattr(services, "_LINK_TTL", 60.0)
    assert call(other.click_path(SALE))[0] == 302
    with CaptureQueriesContext(connection) as queries:
        assert call(other.click_path(SALE))[0] == 302
    assert len(queries) == 0  # a link the process knows costs no query
    # The click on the deleted link is left out; the others are written.
    assert buffered.flush() == 2
    assert list(TrackingLog.objects.values_list("sending_log_id", flat=True)) == [other.log.pk] * 2


def test_a_hit_the_database_refuses_is_dropped_alone_and_the_others_written(buffered, make_sent, caplog):
    sent = make_sent()
    call(sent.open_path())
    # A row the database refuses (here a type longer than its column): it must not hold the others back.
    buffered.add((time.time(), sent.log.pk, "click-too-long", None, None, BROWSER, ""))
    call(sent.click_path(SALE))
    call(sent.open_path())
    assert buffered.flush() == 3
    assert sorted(TrackingLog.objects.values_list("kind", flat=True)) == ["click", "open", "open"]
    assert buffered.held() == 0 and "the database refused this hit; dropped" in caplog.text


# --- what a review found: each test failed before its fix -------------------------------------
def test_one_log_in_several_chunks_gets_the_earliest_times(make_sent, monkeypatch):
    monkeypatch.setattr(buffers, "CHUNK", 1)  # a long outage's backlog: one log's hits in several statements
    sent = make_sent()
    t0 = timezone.now() - timedelta(minutes=10)
    clicked = hit(sent.log, at=t0, kind="click", url=sent.urls[SALE])
    assert hits_write([hit(sent.log, at=t0 + timedelta(minutes=5)), hit(sent.log, at=t0), clicked]) == 3
    log = sent.refresh().log
    assert (log.first_open_at, log.first_click_at) == (t0, t0)


def terminate(connection_to_cut):
    """Cut a Django connection from the server side, as a PostgreSQL restart would."""
    connection_to_cut.ensure_connection()
    pid = connection_to_cut.connection.info.backend_pid
    params = connection_to_cut.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items() if k in ("dbname", "user", "host", "port", "password")}, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_a_half_written_before_the_connection_was_lost_is_not_written_again(buffered, make_sent, monkeypatch):
    sent = make_sent()
    call(sent.open_path())
    buffered.add((time.time(), sent.log.pk, "click-too-long", None, None, BROWSER, ""))  # refused: the batch is halved
    call(sent.open_path())
    real, calls = buffers.hits_write, []

    def connection_lost_before_the_second_half(hits):
        calls.append(len(hits))
        if len(calls) == 3:  # [open, refused, open] refused -> [open] written, then [refused, open]
            terminate(connection)
        return real(hits)

    monkeypatch.setattr(buffers, "hits_write", connection_lost_before_the_second_half)
    assert buffered.flush() == 1 and buffered.held() == 2  # the first open written; the other half kept
    monkeypatch.setattr(buffers, "hits_write", real)
    assert buffered.flush() == 1
    assert TrackingLog.objects.filter(kind="open").count() == 2 and buffered.held() == 0


def test_a_batch_whose_commit_is_in_doubt_is_looked_up_before_writing_it_again(buffered, make_sent):
    sent = make_sent()
    params = connection.get_connection_params()
    dsn = {k: v for k, v in params.items() if k in ("dbname", "user", "host", "port", "password")}
    xids = {}
    for outcome in ("committed", "rolled back"):
        with psycopg.connect(**dsn) as other:
            xids[outcome] = other.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
            other.commit() if outcome == "committed" else other.rollback()
    assert buffers.transaction_committed(xids["committed"]) is True
    assert buffers.transaction_committed(xids["rolled back"]) is False
    assert buffers.transaction_committed("999999999999") is None  # PostgreSQL cannot say (a future id)

    first, second = hit(sent.log), hit(sent.log, kind="click", url=sent.urls[SALE])
    buffered._doubtful = [(xids["committed"], [first]), (xids["rolled back"], [second]), ("999999999999", [first])]
    assert buffered.flush() == 1  # the rolled-back batch written; the committed one not again
    assert list(TrackingLog.objects.values_list("kind", flat=True)) == ["click"]
    assert buffered.held() == 1  # the one PostgreSQL cannot tell about waits


def test_a_burst_waits_for_a_person_s_open_being_written_by_another_process(make_sent):
    sent = make_sent()
    t0 = timezone.now() - timedelta(minutes=10)
    hits_write([hit(sent.log, at=t0, kind="click", url=sent.urls[SALE])])
    hits_write([hit(sent.log, at=t0 + timedelta(milliseconds=300), kind="click", url=sent.urls[NEW])])
    early = t0 - timedelta(seconds=10)
    params = connection.get_connection_params()
    credentials = {k: v for k, v in params.items() if k in ("dbname", "user", "host", "port", "password")}
    other = psycopg.connect(**credentials)
    # Another process is writing a person's earlier open (first time moved, not committed yet)...
    other_buffer = [hit(sent.log, at=early)]
    with other.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tracking_trackinglog (at, delivery_id, sending_log_id, kind, user_agent, ip_hash, is_machine, machine_reason) "
            "VALUES (%s, %s, %s, 'open', '', '', false, '')",
            [other_buffer[0].at, sent.delivery.pk, sent.log.pk],
        )
        cursor.execute(f"SELECT id FROM {buffers._LOG} WHERE id = %s FOR NO KEY UPDATE", [sent.log.pk])
        cursor.execute(f"UPDATE {buffers._LOG} SET first_open_at = %s WHERE id = %s", [early, sent.log.pk])
    # ...while this one writes the click that completes a burst.
    errors = []

    def third_click():
        try:
            hits_write([hit(sent.log, at=t0 + timedelta(milliseconds=600), kind="click", url=sent.urls[FAQ])])
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=third_click)
    thread.start()
    # Commit the other process's write only once this one waits for its lock (polled, not slept:
    # a fixed pause let the commit land before the wait on a slow machine, and the test then proved nothing).
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
    deadline = time.monotonic() + 30
    try:
        with psycopg.connect(**credentials, autocommit=True) as watch:  # its own snapshot at each look
            while watch.execute(waiting).fetchone()[0] == 0:
                assert thread.is_alive() and time.monotonic() < deadline, "the third click never waited for the other process's lock"
                time.sleep(0.01)
    finally:
        other.commit()
    other.close()
    thread.join(timeout=30)
    assert not errors
    log = sent.refresh().log
    assert set(TrackingLog.objects.filter(kind="click").values_list("is_machine", flat=True)) == {True}
    assert (log.first_open_at, log.first_click_at) == (early, None)


def test_a_hit_noted_after_the_buffer_stopped_is_written_at_once(buffered, make_sent):
    sent = make_sent()
    buffered.stop()
    assert call(sent.open_path())[:3:2] == (200, GIF)
    assert TrackingLog.objects.count() == 1 and buffered.held() == 0


def test_a_nul_in_the_user_agent_is_removed_not_refused(buffered, make_sent):
    sent = make_sent()
    buffered.add((time.time(), sent.log.pk, "open", None, None, "Mozilla/5.0\x00 (X11) Firefox/131.0", "192.0.2.1"))
    assert buffered.flush() == 1
    assert TrackingLog.objects.get().user_agent == "Mozilla/5.0 (X11) Firefox/131.0"


def test_a_forked_child_starts_its_own_buffer(buffered):
    assert buffers.hit_buffer() is buffered
    pid = os.fork()
    if pid == 0:  # the child: the parent's buffer (and what it holds) is not its to write
        os._exit(0 if buffers._buffer is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert buffers.hit_buffer() is buffered  # the parent keeps its own
