"""Live progress: processed / to deliver from the counters, rate over the last minute, ETA."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deliveries.models import SendingStatus, State
from kpis.selectors import delivery_progress


@pytest.fixture
def sending(make_delivery, add_logs):
    now = timezone.now()
    d = make_delivery(
        "Flash sale", state=State.IN_PROGRESS, to_deliver_count=100, processed_count=40, sent_count=38, failed_count=2
    )
    add_logs(d, 30, SendingStatus.SENT, event_at=now - timedelta(seconds=20))  # the last minute
    add_logs(d, 10, SendingStatus.SENT, event_at=now - timedelta(minutes=3))  # earlier
    add_logs(d, 60, SendingStatus.PENDING)
    return d


def test_rate_is_messages_per_minute_over_the_last_minute_and_eta_follows(sending):
    now = timezone.now()
    p = delivery_progress(delivery=sending, now=now)
    assert (p.processed, p.to_deliver, p.percent, p.remaining) == (40, 100, 40, 60)
    assert p.rate_per_minute == 30
    assert p.eta == now + timedelta(minutes=60 / 30)  # 60 left at 30 a minute: two minutes
    assert p.eta_left_display == "about 2 min left"


def test_progress_reads_counters_and_one_count(sending, django_assert_max_num_queries):
    with django_assert_max_num_queries(1):
        delivery_progress(delivery=sending)


def test_paused_send_has_no_eta(sending):
    sending.state = State.PAUSED
    p = delivery_progress(delivery=sending)
    assert p.eta is None and p.is_sending


def test_the_block_polls_while_sending_and_shows_bar_rate_and_eta(client, ops, sending):
    client.force_login(ops)
    html = client.get(reverse("kpis:deployment-kpis", args=[sending.pk])).content.decode()
    assert 'hx-trigger="every 2s"' in html
    assert "Sending" in html and "Send is being processed by the message sending service." in html
    assert 'role="progressbar"' in html and 'style="width: 40%"' in html
    assert "40 / 100 (40%)" in html
    assert "30 messages per minute" in html
    assert "about 2 min left" in html


def test_inside_the_message_dashboard_the_part_leaves_status_and_bar_to_it(client, ops, sending):
    client.force_login(ops)
    html = client.get(
        reverse("kpis:deployment-kpis", args=[sending.pk]), HTTP_HX_REQUEST="true", HTTP_HX_TARGET="deployment-kpis"
    ).content.decode()
    assert "30 messages per minute" in html
    assert "progressbar" not in html and "hx-trigger" not in html  # the dashboard's block refreshes and reloads it


def test_polling_stops_when_the_send_ends(client, ops, sending, django_capture_on_commit_callbacks):
    client.force_login(ops)
    sending.state, sending.finished_at, sending.processed_count = State.FINISHED, timezone.now(), 100
    sending.save()
    with django_capture_on_commit_callbacks(execute=True):
        first = client.get(reverse("kpis:deployment-kpis", args=[sending.pk])).content.decode()
    assert "Finished sending" in first and "Computing…" in first and "hx-trigger" in first  # figures on their way
    done = client.get(reverse("kpis:deployment-kpis", args=[sending.pk])).content.decode()
    assert "hx-trigger" not in done and "Computed at" in done and "data-kpi" in done


def test_progress_api(client, ops, sending):
    client.force_login(ops)
    data = client.get(f"/api/deliveries/{sending.pk}/progress/").json()
    assert data["processed"] == 40 and data["to_deliver"] == 100 and data["percent"] == 40
    assert data["rate_per_minute"] == 30 and data["eta"] and 100 <= data["eta_seconds"] <= 120
    assert client.get("/api/deliveries/999999/progress/").json()["code"] == "not_found"


def test_a_paused_send_says_there_is_no_eta(client, ops, sending):
    sending.state = State.PAUSED
    sending.save()
    client.force_login(ops)
    html = client.get(reverse("kpis:deployment-kpis", args=[sending.pk])).content.decode()
    assert "Paused" in html and "None while the send is paused." in html and "hx-trigger" in html


def test_in_a_send_s_first_minute_the_rate_is_taken_over_the_time_elapsed(make_delivery, add_logs):
    now = timezone.now()
    d = make_delivery(
        "Just started", state=State.IN_PROGRESS, started_at=now - timedelta(seconds=20), to_deliver_count=1000,
        processed_count=100,
    )  # fmt: skip
    add_logs(d, 100, SendingStatus.SENT, event_at=now - timedelta(seconds=10))
    p = delivery_progress(delivery=d, now=now)
    assert p.rate_per_minute == 300  # 100 in 20 seconds
    assert p.eta == now + timedelta(minutes=900 / 300)
