"""Browser: a Delivery supervisor watches a real send progress on the deployment dashboard, then
acknowledges the alert it raised."""

import asyncio
import re
import time

import pytest
from playwright.sync_api import expect

from deliveries.models import Delivery, State
from deliveries.services import delivery_confirm, delivery_create, delivery_prepare
from ops.models import Alert, AlertThresholds, Criterion
from ops.services import alerts_check
from tests.deliveries.conftest import HTML, make_audience, make_profiles

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

N = 60


def wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_ops_watches_a_send_progress_then_acknowledges_its_alert(
    page, sign_in, ops, marketer, celery_worker, smtp_server, settings
):
    settings.SEND_CHUNK, settings.SEND_CONNECTIONS = 5, 1  # one connection to a slow relay: a send of seconds
    settings.OPS_DASHBOARD_POLL_SECONDS = 1
    AlertThresholds.objects.create(
        bounce_rate=0.05, bounce_min_processed=10, start_pending_minutes=30, min_throughput_per_minute=0
    )
    original = smtp_server.handle_DATA

    async def slow_data(server, session, envelope):  # a slow relay: the send takes a few seconds
        await asyncio.sleep(0.08)
        return await original(server, session, envelope)

    smtp_server.handle_DATA = slow_data
    emails = [f"w{i:02d}@example.com" for i in range(N)]
    for address in emails[:6]:  # 10% refused: above the 5% alert threshold, below the auto-pause limit
        smtp_server.set_reply(address, "550 5.1.1 User unknown")
    d = delivery_create(
        user=marketer,
        data={
            "label": "Watched send",
            "sender_name": "Shop",
            "sender_address": "news@shop.example.com",
            "subject": "Hi",
            "html": HTML,
            "audience": make_audience(make_profiles(emails)),
        },  # fmt: skip
    )
    delivery_prepare(delivery=d, user=marketer)
    wait_for(lambda: Delivery.objects.get(pk=d.pk).state == State.READY)

    sign_in(page, "ops")
    page.get_by_role("link", name="Deployments").click()
    expect(page.get_by_role("heading", name="Deployments")).to_be_visible()
    now_sending = page.get_by_test_id("now-sending")
    expect(now_sending).to_contain_text("No message is being sent right now.")

    delivery_confirm(delivery=Delivery.objects.get(pk=d.pk), user=marketer)
    row = now_sending.locator(f'tr[data-id="DM{d.pk}"]')
    # the live part shows the send part-way, then the bar moves on without a reload
    expect(row.get_by_test_id("processed")).to_have_text(re.compile(rf"^([1-9]|[1-5]\d) of {N} "), timeout=20_000)
    first = int(row.get_by_test_id("processed").inner_text().split()[0])
    expect(row.get_by_test_id("processed")).not_to_have_text(re.compile(rf"^{first} of "), timeout=20_000)
    expect(row).to_contain_text("Mia Marketer")
    expect(row.get_by_role("link", name="Watched send")).to_have_attribute("href", f"/deliveries/{d.pk}/deployment/")
    # finished: it leaves "Now sending"
    expect(row).to_have_count(0, timeout=30_000)
    assert Delivery.objects.get(pk=d.pk).state == State.FINISHED

    alerts_check()  # the 10-minute beat job
    alert = Alert.objects.get(delivery=d)
    assert alert.criterion == Criterion.BOUNCES
    assert any("Watched send" in str(m.message["Subject"]) for m in smtp_server.received_by("ops@example.com"))
    alerts = page.get_by_test_id("alerts")
    expect(alerts).to_contain_text("Bounces + errors reached 10% of 60 processed messages", timeout=10_000)
    expect(page.get_by_test_id("open-alert-count")).to_have_text("1")
    alerts.locator(f'tr[data-alert="{alert.pk}"]').get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_test_id("ops-notice")).to_contain_text(
        f"Alert acknowledged: Bounces + errors above the threshold on Watched send (DM{d.pk})."
    )
    expect(page.get_by_test_id("open-alert-count")).to_have_text("0")
    alert.refresh_from_db()
    assert alert.acknowledged_by == ops and alert.acknowledged_at is not None

    page.reload()
    recent = page.get_by_test_id("recently-sent").locator(f'tr[data-id="DM{d.pk}"]')
    expect(recent).to_contain_text("90.0%")  # delivered
    expect(recent).to_contain_text("10.0%")  # bounces + errors
