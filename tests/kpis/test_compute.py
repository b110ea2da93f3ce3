"""Every KPI and rate of DOMAIN.md §4 against a fixture whose expected numbers are worked out by hand."""

from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.urls import reverse

from deliveries.models import FailureReason, FailureType, SendingStatus, State
from kpis.figures import NO_RATE, format_rate, kpi_figures, kpi_rates
from kpis.services import kpis_compute
from tracking.models import TrackingLog

OPEN, CLICK, MIRROR, OPTOUT = (
    TrackingLog.Kind.OPEN,
    TrackingLog.Kind.CLICK,
    TrackingLog.Kind.MIRROR,
    TrackingLog.Kind.OPTOUT,
)


def pct(numerator, denominator):
    """The rate as a person would compute it: numerator × 100 / denominator, one decimal, half up."""
    return (Decimal(numerator * 100) / Decimal(denominator)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


@pytest.fixture
def campaign(make_delivery, add_logs, track, tracked_url):
    d = make_delivery("Autumn newsletter", to_deliver_count=21)
    sent = add_logs(d, 12, SendingStatus.SENT)
    add_logs(d, 3, SendingStatus.FAILED, FailureType.HARD, FailureReason.USER_UNKNOWN)
    add_logs(d, 2, SendingStatus.FAILED, FailureType.SOFT, FailureReason.MAILBOX_FULL)  # retries ran out
    # accepted by the server (sent), opened, then an asynchronous bounce turned it failed
    (bounced_later,) = add_logs(d, 1, SendingStatus.FAILED, FailureType.HARD, FailureReason.USER_UNKNOWN)
    track(bounced_later, OPEN)
    add_logs(d, 1, SendingStatus.PENDING, FailureType.SOFT, FailureReason.MAILBOX_FULL, attempts=1)  # retry waiting
    add_logs(d, 1, SendingStatus.UNKNOWN)
    add_logs(d, 1, SendingStatus.CANCELLED)
    url = tracked_url(d)
    s1, s2, s3, s4, s5, s6, s7 = sent[:7]
    track(s1, OPEN, times=2)  # two human opens: one unique open
    track(s2, CLICK, url=url)  # a click without a pixel open still counts as an open
    track(s3, OPEN, machine=True)  # a mail scanner only: nothing
    track(s4, CLICK, machine=True, url=url)  # a machine click...
    track(s4, OPEN)  # ...and a human open: an open, not a click
    track(s5, OPTOUT)  # opt-out implies an open
    track(s6, MIRROR)  # mirror page implies an open
    track(s7, OPEN)
    track(s7, CLICK, url=url, times=3)  # three clicks: one unique click
    return d


def test_every_kpi_matches_the_hand_computed_figures(campaign):
    snap = kpis_compute(delivery_id=campaign.pk)

    to_deliver = 12 + 3 + 2 + 1 + 1 + 1 + 1  # every sending log created by preparation
    delivered = 12
    bounces = 3 + 2 + 1  # failed, whatever the type, including the asynchronous bounce
    hard, soft = 3 + 1, 2
    sent = delivered + bounces
    # s1, s2 (click only), s4 (human open), s5 (opt-out), s6 (mirror), s7, and the log opened before it bounced
    unique_opens = 7
    unique_clicks = 2  # s2, s7
    assert (snap.to_deliver, snap.delivered, snap.bounces, snap.sent) == (to_deliver, delivered, bounces, sent)
    assert (snap.hard_bounces, snap.soft_bounces) == (hard, soft)
    assert (snap.pending, snap.unknown, snap.cancelled) == (1, 1, 1)
    assert (snap.unique_opens, snap.unique_clicks, snap.opt_outs, snap.mirror_pages) == (
        unique_opens,
        unique_clicks,
        1,
        1,
    )
    assert snap.computed_at is not None and snap.duration_ms >= 0

    assert kpi_rates(snap) == {
        "sent": pct(sent, to_deliver),  # 85.7
        "delivered": pct(delivered, sent),  # 66.7
        "bounces": pct(bounces, sent),  # 33.3
        "hard_bounces": pct(hard, sent),
        "soft_bounces": pct(soft, sent),
        "open": pct(unique_opens, delivered),  # 58.3
        "click_through": pct(unique_clicks, delivered),  # 16.7
        "unsubscribe": pct(1, delivered),
        "mirror_page": pct(1, delivered),
    }
    assert format_rate(pct(sent, to_deliver)) == "85.7%"


def test_recomputing_reflects_an_asynchronous_bounce(campaign):
    kpis_compute(delivery_id=campaign.pk)
    log = campaign.sending_logs.filter(status=SendingStatus.SENT).first()
    log.status, log.failure_type, log.failure_reason = (
        SendingStatus.FAILED,
        FailureType.HARD,
        FailureReason.USER_UNKNOWN,
    )
    log.save()
    snap = kpis_compute(delivery_id=campaign.pk)
    assert (snap.delivered, snap.bounces, snap.sent) == (11, 7, 18)  # Delivered % goes down, sent stays


def test_zero_denominators_show_a_dash(make_delivery, add_logs):
    empty = make_delivery("Nobody")
    snap = kpis_compute(delivery_id=empty.pk)
    assert set(kpi_rates(snap).values()) == {None}
    assert {f.rate_display for f in kpi_figures(snap).values() if f.show_rate} == {NO_RATE}

    all_failed = make_delivery("All bounced")
    add_logs(all_failed, 4, SendingStatus.FAILED, FailureType.HARD, FailureReason.USER_UNKNOWN)
    rates = kpi_rates(kpis_compute(delivery_id=all_failed.pk))
    assert rates["bounces"] == Decimal("100.0") and rates["delivered"] == Decimal("0.0")
    assert rates["open"] is None and rates["click_through"] is None  # nothing delivered: "–"


def test_the_deployment_block_shows_the_tiles_with_formulas(client, marketer, campaign):
    kpis_compute(delivery_id=campaign.pk)
    client.force_login(marketer)
    html = client.get(reverse("kpis:deployment-kpis", args=[campaign.pk])).content.decode()
    assert "Finished sending" in html and "All messages have been processed." in html
    assert "hx-trigger" not in html  # the send is over and nothing is computing: no polling
    for text in ("To deliver", "Sent", "Delivered", "Bounces + errors", "Open rate", "Click-through rate"):
        assert text in html
    assert "85.7%" in html and "66.7%" in html and "33.3%" in html and "58.3%" in html and "16.7%" in html
    assert 'title="Open rate = unique opens / delivered.' in html
    assert "Computed at" in html


def test_a_send_without_recipients_shows_dashes_not_errors(client, marketer, make_delivery):
    d = make_delivery("Empty audience")
    kpis_compute(delivery_id=d.pk)
    client.force_login(marketer)
    html = client.get(reverse("kpis:deployment-kpis", args=[d.pk])).content.decode()
    assert html.count(NO_RATE) >= 5


def test_a_message_never_sent_has_no_tiles_and_does_not_poll(client, marketer, make_delivery):
    d = make_delivery("Draft", state=State.EDITING)
    client.force_login(marketer)
    html = client.get(reverse("kpis:deployment-kpis", args=[d.pk])).content.decode()
    assert "No send yet" in html and "hx-trigger" not in html and "data-kpi" not in html
