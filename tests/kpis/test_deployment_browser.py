"""Browser: a marketer confirms a send, watches it finish, opens the Deployment window and computes stats."""

import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from deliveries.models import Delivery, SendingLog, State
from deliveries.services import delivery_create, delivery_prepare_run
from kpis.models import KpiSnapshot
from tests.deliveries.conftest import HTML, make_audience, make_profiles
from tracking.models import TrackingLog
from tracking.services import first_times_recompute

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_marketer_watches_the_send_then_computes_stats(page, sign_in, marketer, celery_worker, smtp_server, settings):
    settings.SEND_CHUNK = 5
    profiles = make_profiles([f"fan{i}@example.com" for i in range(20)])
    d = delivery_create(
        user=marketer,
        data={
            "label": "Black Friday",
            "sender_name": "Shop",
            "sender_address": "news@shop.example.com",
            "subject": "Hi",
            "html": HTML,
            "audience": make_audience(profiles),
        },  # fmt: skip
    )
    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
    delivery_prepare_run(delivery_id=d.pk)

    sign_in(page, "marketer")
    page.goto(f"/deliveries/{d.pk}/")
    page.get_by_role("button", name="Confirm send").click()
    page.get_by_role("dialog", name="Confirm send").get_by_role("button", name="OK").click()
    block = page.locator("#deployment-block")
    expect(block).to_contain_text("Finished sending", timeout=60_000)
    tiles = block.get_by_test_id("kpi-tiles")  # the kpis part of the block, computed once the send ended
    expect(tiles.locator('[data-kpi="delivered"]')).to_contain_text("100.0%", timeout=30_000)
    expect(tiles.locator('[data-kpi="open"]')).to_contain_text("0.0%")

    page.get_by_role("link", name="Deployment window").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Deployment 'Black Friday (DM{d.pk})'")
    computed_at = page.get_by_test_id("computed-at")
    expect(computed_at).to_contain_text("Computed at")
    before = computed_at.inner_text()
    charts = page.get_by_test_id("charts")
    expect(charts).to_contain_text("No open or click yet.")

    # five recipients open the message meanwhile
    logs = list(SendingLog.objects.filter(delivery=d).order_by("id")[:5])
    TrackingLog.objects.bulk_create(
        [TrackingLog(delivery=d, sending_log=log, kind=TrackingLog.Kind.OPEN, at=log.event_at) for log in logs]
    )
    first_times_recompute(log_ids=[log.pk for log in logs])  # as the pixel's writer does
    shown = KpiSnapshot.objects.get(pk=d.pk).computed_at.replace(microsecond=0)
    while timezone.now() < shown + timedelta(seconds=1):  # "Computed at" shows seconds: the next one must read apart
        time.sleep(0.05)
    page.get_by_role("button", name="Compute stats").click()
    expect(page.get_by_test_id("kpis-notice")).to_contain_text("Computing the statistics")
    expect(page.locator('[data-kpi="open"]')).to_contain_text("25.0%", timeout=30_000)  # 5 of 20 delivered
    expect(computed_at).not_to_have_text(before)
    expect(computed_at).to_contain_text(re.compile(r"Computed at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))
    # the charts follow the tiles without a reload: the opens are drawn
    expect(charts.locator("rect.bar.opens")).to_have_count(1, timeout=15_000)
    expect(charts).not_to_contain_text("No open or click yet.")
    assert KpiSnapshot.objects.get(pk=d.pk).unique_opens == 5

    page.get_by_role("link", name="Sending logs").click()
    expect(page.get_by_test_id("tab-sending")).to_contain_text("fan0@example.com")
