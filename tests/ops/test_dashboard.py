"""The deployment dashboard, the message's alerts partial, the thresholds page and the API."""

import io
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deliveries.models import Delivery, State
from kpis.models import KpiSnapshot
from ops.models import Alert, AlertThresholds, Criterion, ProcessedHour
from ops.services import alerts_check, processed_hours_record

pytestmark = pytest.mark.django_db


def rows(html: str, testid: str) -> list[str]:
    table = re.search(rf'data-testid="{testid}".*?</table>', html, re.S).group(0)
    return re.findall(r'<tr data-id="(DM\d+)"', table)


@pytest.fixture
def board(make_delivery, marketer, admin):
    now = timezone.now()
    sending = make_delivery(
        "Now going",
        state=State.IN_PROGRESS,
        sent=300,
        failed=20,
        to_deliver_count=1000,
        created_by=marketer,
        started_at=now - timedelta(minutes=3),
    )
    paused = make_delivery(
        "On hold",
        state=State.PAUSED,
        sent=10,
        to_deliver_count=50,
        created_by=admin,
        started_at=now - timedelta(minutes=90),
    )
    later = make_delivery(
        "Later", state=State.START_PENDING, schedule="at", scheduled_at=now + timedelta(hours=5), to_deliver_count=700
    )
    sooner = make_delivery(
        "Sooner", state=State.START_PENDING, schedule="at", scheduled_at=now + timedelta(hours=1), to_deliver_count=300
    )
    done = make_delivery("Done well", sent=950, failed=50, created_by=marketer, channel="email")
    KpiSnapshot.objects.create(
        delivery=done, to_deliver=1000, delivered=950, bounces=50, unique_opens=190, unique_clicks=19, computed_at=now
    )
    weak = make_delivery(
        "Done badly",
        sent=100,
        failed=100,
        created_by=admin,
        started_at=now - timedelta(days=2),
        finished_at=now - timedelta(days=2),
    )
    old = make_delivery(
        "Last month", sent=10, started_at=now - timedelta(days=20), finished_at=now - timedelta(days=20)
    )
    make_delivery("Draft", state=State.EDITING)
    return {
        "sending": sending,
        "paused": paused,
        "later": later,
        "sooner": sooner,
        "done": done,
        "weak": weak,
        "old": old,
    }


def test_dashboard_shows_now_sending_coming_up_recently_sent_and_totals(client, ops, board):
    client.force_login(ops)
    html = client.get(reverse("ops:dashboard")).content.decode()
    b = board
    assert rows(html, "now-sending") == [b["paused"].human_id, b["sending"].human_id]  # the longest running first
    assert "320 of 1,000 (32%)" in html  # processed of to deliver, from the counters
    assert "Mia Marketer" in html
    assert rows(html, "coming-up") == [b["sooner"].human_id, b["later"].human_id]  # by start time
    # recently sent: the last 7 days, newest start first; the deployment window is one click away
    assert rows(html, "recently-sent") == [
        b["sending"].human_id,
        b["paused"].human_id,
        b["done"].human_id,
        b["weak"].human_id,
    ]
    assert reverse("kpis:deployment", args=[b["done"].pk]) in html
    assert '320 <span class="muted small">32.0%</span>' in html  # Sent: processed, % of to deliver
    totals = re.search(r'data-testid="totals".*?</div>\s*</div>\s*</div>', html, re.S).group(0)
    assert "95.0%" not in totals  # not the message's rate: all four together
    # 4 messages, 1,000+50+1,000+200 recipients, delivered (300+10+950+100)/1,530 = 88.9%, bounces 11.1%, opens 190/950 = 20.0%, clicks 2.0%
    for value in ("4", "2,250", "88.9%", "11.1%", "20.0%", "2.0%"):
        assert f'<div class="value">{value}</div>' in totals, value


def test_recently_sent_filters_and_sorting(client, ops, admin, board):
    client.force_login(ops)
    url = reverse("ops:dashboard")
    b = board
    assert rows(client.get(url, {"period": "30d"}).content.decode(), "recently-sent")[-1] == b["old"].human_id
    assert rows(client.get(url, {"period": "24h"}).content.decode(), "recently-sent") == [
        b["sending"].human_id,
        b["paused"].human_id,
        b["done"].human_id,
    ]
    assert rows(client.get(url, {"owner": admin.pk}).content.decode(), "recently-sent") == [
        b["paused"].human_id,
        b["weak"].human_id,
    ]
    assert rows(client.get(url, {"status": "finished"}).content.decode(), "recently-sent") == [
        b["done"].human_id,
        b["weak"].human_id,
    ]
    assert rows(client.get(url, {"sort": "-bounces"}).content.decode(), "recently-sent")[0] == b["weak"].human_id
    by_open = rows(client.get(url, {"sort": "-open"}).content.decode(), "recently-sent")
    assert by_open[0] == b["done"].human_id  # the only one with computed KPIs; the others ("–") last
    html = client.get(url, {"sort": "label"}).content.decode()
    assert rows(html, "recently-sent") == [
        b["weak"].human_id,
        b["done"].human_id,
        b["sending"].human_id,
        b["paused"].human_id,
    ]
    assert 'aria-sort="ascending"' in html
    # nonsense in the query string falls back to the defaults instead of failing
    assert client.get(url, {"period": "1y", "sort": "drop table", "owner": "x", "status": "?"}).status_code == 200


def test_live_part_refreshes_alone_and_the_page_reads_no_sending_log(client, ops, board, django_assert_max_num_queries):
    client.force_login(ops)
    live = client.get(reverse("ops:dashboard"), {"part": "live"}, headers={"HX-Request": "true"})
    html = live.content.decode()
    assert 'id="ops-live"' in html and "<html" not in html and "Recently sent" not in html
    assert 'hx-trigger="every 5s"' in html
    with django_assert_max_num_queries(20) as captured:
        client.get(reverse("ops:dashboard"))
    scans = [q["sql"] for q in captured.captured_queries if "deliveries_sendinglog" in q["sql"]]
    # only the live rates of the sends now sending: one count over (delivery, event_at) in the last minute
    assert len(scans) == 1 and '"event_at" >' in scans[0] and "GROUP BY" in scans[0]


def test_chart_of_messages_processed_per_hour_from_the_hourly_counter(client, ops, make_delivery):
    now = timezone.now()
    d = make_delivery(
        "Hourly", state=State.IN_PROGRESS, sent=100, to_deliver_count=1000, started_at=now - timedelta(minutes=30)
    )
    assert processed_hours_record(now=now - timedelta(hours=1)) == 1
    Delivery.objects.filter(pk=d.pk).update(sent_count=250, failed_count=10)
    assert processed_hours_record(now=now) == 1
    assert processed_hours_record(now=now) == 0  # nothing new since the last sample
    hours = list(ProcessedHour.objects.order_by("hour").values_list("processed", "total"))
    assert hours == [(100, 100), (160, 260)]
    client.force_login(ops)
    html = client.get(reverse("ops:dashboard"), {"period": "24h"}).content.decode()
    assert "Messages processed per hour" in html
    assert re.search(r'<rect class="bar processed"[^>]*><title>[^<]*: 160</title>', html)
    assert re.search(r'<rect class="bar processed"[^>]*><title>[^<]*: 100</title>', html)


def test_alerts_on_the_dashboard_and_on_the_message_then_acknowledged(
    client, ops, marketer, make_delivery, smtp_server
):
    d = make_delivery("Bouncy", sent=80, failed=20)
    alerts_check()
    alert = Alert.objects.get()
    client.force_login(ops)
    html = client.get(reverse("ops:dashboard")).content.decode()
    assert 'data-testid="open-alert-count">1<' in html and "Bounces + errors above the threshold" in html
    partial = reverse("ops:delivery-alerts", args=[d.pk])
    assert partial == f"/deliveries/{d.pk}/alerts/"
    html = client.get(
        partial, headers={"HX-Request": "true", "HX-Current-URL": f"http://testserver/deliveries/{d.pk}/"}
    ).content.decode()
    assert "Bounces + errors reached 20%" in html and "Acknowledge" in html
    assert f'name="next" value="/deliveries/{d.pk}/"' in html  # without htmx, back to the message
    # a marketer reads the message's alerts but cannot acknowledge them
    client.force_login(marketer)
    html = client.get(partial).content.decode()
    assert "Not acknowledged yet" in html and "<button" not in html
    assert client.post(reverse("ops:alert-acknowledge", args=[alert.pk])).status_code == 403
    # ops acknowledges from the message (htmx): the partial comes back updated
    client.force_login(ops)
    response = client.post(
        reverse("ops:alert-acknowledge", args=[alert.pk]), {"from": d.pk}, headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert "Alert acknowledged" in html and re.search(r"Acknowledged by Omar Ops at \d{4}-", html)
    assert not Delivery.objects.get(pk=d.pk).has_open_alert
    # again from a stale page: refused with a sentence, nothing changes
    response = client.post(reverse("ops:alert-acknowledge", args=[alert.pk]), {"next": "/deployments/"})
    assert response.status_code == 302 and response["Location"] == "/deployments/"
    html = client.get("/deployments/").content.decode()
    assert "This alert was already acknowledged by Omar Ops" in html
    assert 'data-testid="open-alert-count">0<' in html


def test_permissions_on_pages_and_api(client, marketer, ops, admin, preparer):
    for user in (marketer, preparer):
        client.force_login(user)
        for url in ("/deployments/", "/deployments/health/", "/deployments/thresholds/"):
            response = client.get(url)
            assert response.status_code == 403, url
        assert "Monitor deliveries" in client.get("/deployments/").content.decode()
        for url in ("/api/deployments/", "/api/alerts/"):
            response = client.get(url)
            assert response.status_code == 403 and response.json()["detail"].startswith(
                "This page needs the “Monitor deliveries” or “Administration” role"
            )
        assert client.post("/api/alerts/1/acknowledge/").status_code == 403
    client.force_login(ops)
    assert client.get("/deployments/").status_code == 200
    assert client.get("/deployments/thresholds/").status_code == 403  # Administration only
    assert 'href="/deployments/">Deployments</a>' in client.get("/deployments/").content.decode()
    client.force_login(admin)
    assert client.get("/deployments/").status_code == 200 and client.get("/deployments/thresholds/").status_code == 200
    client.logout()
    assert client.get("/api/deployments/").status_code == 401
    assert client.get("/deployments/").status_code == 302  # to the sign-in page


def test_administration_edits_alert_thresholds_and_the_autopause_limit(client, admin, ops):
    from deliveries.services import sending_policy_get

    client.force_login(admin)
    html = client.get("/deployments/thresholds/").content.decode()
    assert 'name="bounce_rate_percent"' in html and 'value="5"' in html and "Default: 5" in html
    assert 'name="autopause_rate_percent" value="20"' in html  # not "2E+1"
    data = {
        "bounce_rate_percent": "3.5", "bounce_min_processed": "200", "start_pending_minutes": "15",
        "min_throughput_per_minute": "20", "autopause_rate_percent": "15", "autopause_min_processed": "400",
    }  # fmt: skip
    response = client.post("/deployments/thresholds/", data)
    assert response.status_code == 302
    t = AlertThresholds.objects.get()
    assert (
        t.bounce_rate,
        t.bounce_min_processed,
        t.start_pending_minutes,
        t.min_throughput_per_minute,
        t.updated_by,
    ) == (0.035, 200, 15, 20, admin)
    policy = sending_policy_get()
    assert (policy.autopause_bounce_rate, policy.autopause_min_processed) == (0.15, 400)
    # an alert rate above the auto-pause rate makes no sense: refused with a sentence
    html = client.post("/deployments/thresholds/", {**data, "bounce_rate_percent": "20"}).content.decode()
    assert "Set the alert rate below the auto-pause rate" in html
    assert AlertThresholds.objects.get().bounce_rate == 0.035


def test_api_deployments_alerts_and_acknowledge(client, ops, board, smtp_server):
    client.force_login(ops)
    body = client.get("/api/deployments/", {"period": "7d", "sort": "-bounces", "limit": "2"}).json()
    assert [r["human_id"] for r in body["now_sending"]] == [board["paused"].human_id, board["sending"].human_id]
    sending = body["now_sending"][1]
    assert (sending["processed"], sending["to_deliver"], sending["percent"], sending["bounce_rate"]) == (
        320,
        1000,
        32,
        6.3,
    )
    assert [r["label"] for r in body["coming_up"]] == ["Sooner", "Later"]
    assert [r["label"] for r in body["recently_sent"]] == ["Done badly", "Now going"] and body[
        "recently_sent_count"
    ] == 4
    assert body["totals"]["messages"] == 4 and body["totals"]["open_rate"] == 20.0
    alerts_check()
    alerts = client.get("/api/alerts/", {"open": "true"}).json()["results"]
    assert {a["criterion"] for a in alerts} == {Criterion.BOUNCES}
    assert {a["delivery"] for a in alerts} == {board["sending"].pk, board["done"].pk}  # "weak" ended 2 days ago
    weak = next(a for a in alerts if a["delivery"] == board["done"].pk)
    response = client.post(f"/api/alerts/{weak['id']}/acknowledge/")
    assert response.status_code == 200 and response.json()["acknowledged_by"] == "ops"
    again = client.post(f"/api/alerts/{weak['id']}/acknowledge/")
    assert again.status_code == 409 and again.json()["code"] == "already_acknowledged"
    assert client.post("/api/alerts/999999/acknowledge/").status_code == 404
    assert weak["id"] not in [a["id"] for a in client.get("/api/alerts/", {"open": "1"}).json()["results"]]


def test_backfill_rebuilds_the_hourly_counter_from_the_sending_logs(make_delivery, add_logs):
    from django.core.management import call_command

    from deliveries.models import SendingStatus

    d = make_delivery("Before ops", sent=3, failed=1)
    hour = timezone.now().replace(minute=10, second=0, microsecond=0) - timedelta(hours=3)
    add_logs(d, 2, event_at=hour)
    add_logs(d, 1, event_at=hour + timedelta(hours=1))
    add_logs(d, 1, status=SendingStatus.FAILED, event_at=hour + timedelta(hours=1, minutes=5))
    add_logs(d, 5, status=SendingStatus.PENDING)  # not processed: not counted
    out = io.StringIO()
    call_command("ops_backfill_hours", stdout=out)
    assert out.getvalue().strip() == "2 hourly row(s) written."
    assert list(ProcessedHour.objects.filter(delivery=d).order_by("hour").values_list("processed", "total")) == [
        (2, 2),
        (2, 4),
    ]


def test_progress_of_many_sends_equals_the_deployment_blocks(make_delivery, add_logs):
    """The dashboard counts every send's rate in one query; the figures are kpis' own."""
    from kpis.selectors import delivery_progress
    from ops.selectors import progress_many

    now = timezone.now()
    fast = make_delivery("Fast", state=State.IN_PROGRESS, sent=400, failed=20, to_deliver_count=1000)
    retry = make_delivery("Retry", state=State.RETRY_IN_PROGRESS, sent=90, to_deliver_count=100)
    paused = make_delivery("Paused", state=State.PAUSED, sent=10, to_deliver_count=100)
    idle = make_delivery("Idle", state=State.IN_PROGRESS, to_deliver_count=100)
    add_logs(fast, 120, event_at=now - timedelta(seconds=20))
    add_logs(fast, 30, event_at=now - timedelta(minutes=3))
    add_logs(retry, 5, event_at=now - timedelta(seconds=5))
    add_logs(paused, 2, event_at=now - timedelta(seconds=50))
    deliveries = list(Delivery.objects.filter(pk__in=[fast.pk, retry.pk, paused.pk, idle.pk]))
    many = progress_many(deliveries, now=now)
    for d in deliveries:
        assert many[d.pk] == delivery_progress(delivery=d, now=now), d.label
    assert many[fast.pk].rate_per_minute == 120 and many[fast.pk].eta is not None


def test_dashboard_shows_the_newest_open_alerts_and_the_alerts_page_lists_them_all(
    client, ops, marketer, make_delivery, smtp_server
):
    for i in range(12):
        make_delivery(f"Bouncy {i:02d}", sent=80, failed=20)
    alerts_check()
    client.force_login(ops)
    html = client.get("/deployments/").content.decode()
    assert 'data-testid="open-alert-count">12<' in html and len(re.findall(r'<tr data-alert="\d+"', html)) == 10
    assert "The 10 newest of 12 open alerts." in html and 'href="/deployments/alerts/"' in html
    page = client.get("/deployments/alerts/").content.decode()
    assert len(re.findall(r'<tr data-alert="\d+"', page)) == 12
    first = Alert.objects.order_by("pk").first()
    response = client.post(
        reverse("ops:alert-acknowledge", args=[first.pk]), {"next": "/deployments/alerts/?status=open"}
    )
    assert response["Location"] == "/deployments/alerts/?status=open"
    assert len(re.findall(r'<tr data-alert="\d+"', client.get("/deployments/alerts/").content.decode())) == 11
    acknowledged = client.get("/deployments/alerts/", {"status": "acknowledged"}).content.decode()
    assert (
        re.search(r"by Omar Ops at \d{4}-", acknowledged)
        and len(re.findall(r'<tr data-alert="\d+"', acknowledged)) == 1
    )
    assert (
        len(
            re.findall(
                r'<tr data-alert="\d+"',
                client.get("/deployments/alerts/", {"criterion": "send_failed"}).content.decode(),
            )
        )
        == 0
    )
    client.force_login(marketer)
    assert client.get("/deployments/alerts/").status_code == 403


def test_coming_up_shows_the_start_time_in_the_message_s_own_time_zone(client, ops, board):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    later = board["later"]
    paris = datetime(2026, 12, 1, 9, 30, tzinfo=ZoneInfo("Europe/Paris"))  # 08:30 UTC
    Delivery.objects.filter(pk=later.pk).update(scheduled_at=paris, schedule_tz="Europe/Paris")
    client.force_login(ops)
    html = client.get(reverse("ops:dashboard")).content.decode()
    row = re.search(rf'<tr data-id="{later.human_id}">.*?</tr>', html, re.S).group(0)
    assert "2026-12-01 09:30" in row and "Europe/Paris" in row  # as the marketer scheduled it, zone named
