"""The Deployment window: title, status, Compute stats, each tab with its filters, pagination and CSV."""

import csv
import io
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deliveries.models import ExclusionCause, FailureReason, FailureType, JournalEntry, SendingStatus, State, TrackedUrl
from tracking.models import TrackingLog


def read_csv(response) -> list[list[str]]:
    assert response["Content-Type"].startswith("text/csv")
    assert response.streaming
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text)))


@pytest.fixture
def sent(make_delivery, add_logs, track, tracked_url, journal, exclude):
    d = make_delivery("Winter promo")
    journal(d, "Delivery started by user 'Mia Marketer (marketer)'")
    journal(d, "3 messages could not be delivered.", level=JournalEntry.Level.WARNING)
    ok = add_logs(d, 55, SendingStatus.SENT)
    add_logs(d, 3, SendingStatus.FAILED, FailureType.HARD, FailureReason.USER_UNKNOWN)
    add_logs(d, 2, SendingStatus.FAILED, FailureType.SOFT, FailureReason.MAILBOX_FULL)
    (evil,) = add_logs(d, 1, SendingStatus.SENT)
    evil.address = "=cmd|'/c calc'!a0@example.com"
    evil.save()
    exclude(d, ExclusionCause.DUPLICATE, 4)
    exclude(d, ExclusionCause.QUARANTINE, 1)
    sale = tracked_url(d, "https://shop.example.com/sale", "Sale")
    tracked_url(d, "https://shop.example.com/unsubscribe", "Unsubscribe", kind=TrackedUrl.Kind.OPTOUT)
    track(ok[0], TrackingLog.Kind.OPEN)
    track(ok[1], TrackingLog.Kind.CLICK, url=sale, times=2)
    track(ok[2], TrackingLog.Kind.CLICK, url=sale, machine=True)
    return d


def page(client, d, **params):
    response = client.get(reverse("kpis:deployment", args=[d.pk]), params)
    assert response.status_code == 200
    return response.content.decode()


def export(client, d, tab, **params):
    return read_csv(client.get(reverse("kpis:deployment-csv", args=[d.pk, tab]), params))


@pytest.mark.parametrize("who", ["marketer", "preparer", "approver", "ops", "admin"])
def test_any_role_reads_the_deployment_window(client, request, who, sent):
    client.force_login(request.getfixturevalue(who))
    html = page(client, sent)
    assert f"<h1>Deployment 'Winter promo (DM{sent.pk})'</h1>" in html
    assert "Finished" in html and "<dt>Started</dt>" in html and "<dt>Ended</dt>" in html
    assert ("Compute stats" in html) == (who in ("marketer", "ops", "admin"))


def test_a_user_without_role_is_refused(client, make_user, sent):
    client.force_login(make_user("nobody"))
    assert client.get(reverse("kpis:deployment", args=[sent.pk])).status_code == 403


def test_log_tab_lists_the_journal_and_exports_it(client, marketer, sent):
    client.force_login(marketer)
    html = page(client, sent)
    assert "Delivery started by user &#x27;Mia Marketer (marketer)&#x27;" in html
    rows = export(client, sent, "log")
    assert rows[0] == ["Date", "Level", "Message", "User"]
    assert {r[1] for r in rows[1:]} == {"Info", "Warning"} and len(rows) == 3


def test_sending_logs_filter_by_status_and_reason_paginate_and_export(client, marketer, sent):
    client.force_login(marketer)
    html = page(client, sent, tab="sending")
    assert "Page 1 of 2" in html  # 61 logs, 50 a page
    assert "Page 2 of 2" in page(client, sent, tab="sending", page=2)

    html = page(client, sent, tab="sending", status="failed", reason="user_unknown")
    assert html.count("User unknown</td>") == 3 and "Mailbox full</td>" not in html
    assert 'value="failed" selected' in html and 'value="user_unknown" selected' in html

    rows = export(client, sent, "sending", status="failed")
    assert rows[0][:5] == ["Date", "Status", "Address", "Nature of failure", "Reason"]
    assert (
        sorted((r[1], r[3], r[4]) for r in rows[1:])
        == [("Failed", "Hard", "User unknown")] * 3 + [("Failed", "Soft", "Mailbox full")] * 2
    )
    assert len(export(client, sent, "sending")) == 1 + 61
    assert len(export(client, sent, "sending", reason="mailbox_full")) == 1 + 2
    assert len(export(client, sent, "sending", status="nonsense")) == 1 + 61  # an unknown filter value is ignored


def test_csv_cells_never_run_as_spreadsheet_formulas(client, marketer, sent):
    client.force_login(marketer)
    addresses = [r[2] for r in export(client, sent, "sending")[1:]]
    assert "'=cmd|'/c calc'!a0@example.com" in addresses


def test_exclusion_tabs(client, marketer, sent):
    client.force_login(marketer)
    assert page(client, sent, tab="exclusions").count("<td>Duplicate</td>") == 4
    assert page(client, sent, tab="exclusions", cause="quarantine").count("<td>Quarantined address</td>") == 1
    assert len(export(client, sent, "exclusions", cause="duplicate")) == 1 + 4
    html = page(client, sent, tab="causes")
    assert "Duplicate" in html and '<td class="num">4</td>' in html and '<th class="num">5</th>' in html
    assert export(client, sent, "causes") == [["Cause", "Volume"], ["Duplicate", "4"], ["Quarantined address", "1"]]


def test_tracking_logs_filter_by_type_and_origin(client, marketer, sent):
    client.force_login(marketer)
    html = page(client, sent, tab="tracking")
    assert html.count("<td>Email click</td>") == 3 and html.count("<td>Open</td>") == 1
    assert page(client, sent, tab="tracking", kind="click", origin="human").count("<td>Email click</td>") == 2
    rows = export(client, sent, "tracking", origin="machine")
    assert rows[0][:4] == ["Date", "Recipient", "Type", "URL label"]
    assert [(r[2], r[3], r[5]) for r in rows[1:]] == [("Email click", "Sale", "yes")]


def test_tracked_urls_count_human_clicks(client, marketer, sent):
    client.force_login(marketer)
    html = page(client, sent, tab="urls")
    assert "https://shop.example.com/sale" in html and "Opt-out" in html
    assert export(client, sent, "urls")[1:] == [
        ["Sale", "Email click", "https://shop.example.com/sale", "2", "1"],
        ["Unsubscribe", "Opt-out", "https://shop.example.com/unsubscribe", "0", "0"],
    ]


def test_an_unknown_export_or_message_is_a_404(client, marketer, sent):
    client.force_login(marketer)
    assert client.get(reverse("kpis:deployment-csv", args=[sent.pk, "passwords"])).status_code == 404
    assert client.get(reverse("kpis:deployment", args=[999999])).status_code == 404


def test_charts_are_server_rendered_svg(client, marketer, sent, add_logs):
    client.force_login(marketer)
    html = client.get(reverse("kpis:deployment-charts", args=[sent.pk])).content.decode()
    # every message went out in the same minute: said in words, no line drawn across the chart
    assert html.count("<svg") == 1 and "61 messages processed within one minute, at " in html and 'class="bar opens"' in html
    assert "Messages processed over time" in html and "Opens and clicks per hour" in html
    add_logs(sent, 4, SendingStatus.SENT, event_at=timezone.now() - timedelta(minutes=70))
    sent.processed_count += 4  # as the sender counts them (the charts of an ended send are cached by its counters)
    sent.save(update_fields=["processed_count"])
    html = client.get(reverse("kpis:deployment-charts", args=[sent.pk])).content.decode()
    assert html.count("<svg") == 2 and "<polyline" in html


def test_charts_of_a_send_not_started_say_so(client, marketer, make_delivery):
    d = make_delivery("Scheduled", state=State.START_PENDING)
    client.force_login(marketer)
    html = client.get(reverse("kpis:deployment-charts", args=[d.pk])).content.decode()
    assert "No message has been processed yet." in html and "No open or click yet." in html


def test_charts_of_an_ended_send_follow_each_recompute(client, marketer, sent, track):
    from kpis.services import kpis_compute

    client.force_login(marketer)
    url = reverse("kpis:deployment-charts", args=[sent.pk])
    assert "Opens: 1" in client.get(url).content.decode()
    for log in sent.sending_logs.filter(status=SendingStatus.SENT)[3:5]:
        track(log, TrackingLog.Kind.OPEN)
    assert "Opens: 1" in client.get(url).content.decode()  # cached until the figures are recomputed
    kpis_compute(delivery_id=sent.pk)
    assert "Opens: 3" in client.get(url).content.decode()


def test_a_tab_asked_by_htmx_comes_alone_and_its_links_stay_in_place(client, marketer, sent):
    """The tabs, filters and pages swap the tab's section only (htmx), the address following."""
    client.force_login(marketer)
    full = page(client, sent)
    assert 'hx-get="?tab=sending" hx-target="#deployment-tab"' in full and 'hx-push-url="true"' in full
    response = client.get(
        reverse("kpis:deployment", args=[sent.pk]),
        {"tab": "sending", "status": "failed"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="deployment-tab",
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card" id="deployment-tab" data-tab="sending">')
    assert "<h1>" not in html and "deployment-charts" not in html and "Compute stats" not in html
    assert html.count("<td>Failed</td>") == 5 and 'data-testid="tab-sending"' in html
    assert '<option value="failed" selected>' in html  # the filter shows what was chosen
