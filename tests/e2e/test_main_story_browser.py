"""The product's main story, walked in a real browser as the demo users do, with a real Celery
worker and a real SMTP server: a preparer writes and prepares a message that needs approval; an
approver approves it; the preparer, without Start deliveries, is told which role confirming needs;
a marketer confirms with the recap, watches the send finish and computes the statistics; a
delivery supervisor pauses a slow send from the dashboard and stops it from the message page.

Any script error in the browser, any console error and any 5xx answer fails the story."""

import asyncio
import re
import time

import pytest
from playwright.sync_api import expect

from deliveries.models import Delivery, JournalEntry, MessageCategory, SendingLog, SendingStatus, State
from deliveries.services import delivery_confirm, delivery_create, delivery_prepare
from tests.deliveries.conftest import HTML, make_audience, make_profiles
from tests.factories import PASSWORD
from tracking.models import TrackingLog
from tracking.services import first_times_recompute

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.fixture
def browse(_chromium, live_server):
    """browse(login) -> a signed-in page of its own browser context; every console error, script
    error and 5xx answer of every page is collected in `browse.problems`."""
    contexts, problems = [], []

    def _open(username: str):
        context = _chromium.new_context(base_url=live_server.url)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: problems.append(f"{username} console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"{username} script error: {e}"))
        page.on("response", lambda r: problems.append(f"{username} {r.status} {r.url}") if r.status >= 500 else None)
        page.goto("/login/")
        page.get_by_label("Login").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/login/" not in url)
        return page

    _open.problems = problems
    yield _open
    for context in contexts:
        context.close()


@pytest.fixture
def slow_relay(smtp_server):
    """The real SMTP server, made slow on demand (`slow_relay.delay = seconds per message`)."""
    original = smtp_server.handle_DATA

    async def handle_data(server, session, envelope):
        await asyncio.sleep(handle_data.delay)
        return await original(server, session, envelope)

    handle_data.delay = 0.0
    smtp_server.handle_DATA = handle_data
    smtp_server.delay_control = handle_data
    return smtp_server


def test_the_main_story(browse, preparer, approver, marketer, ops, celery_worker, slow_relay, settings):
    settings.SEND_CHUNK = 5
    settings.OPS_DASHBOARD_POLL_SECONDS = 1
    make_audience(make_profiles([f"reader{i:02d}@example.com" for i in range(40)]), name="Spring readers")
    MessageCategory.objects.create(name="Promotions", requires_approval=True)  # Administration's decision

    # 1. The preparer writes the message in the editor and prepares it.
    paul = browse("preparer")
    paul.goto("/deliveries/new/")
    paul.get_by_label("Label").fill("Spring sale")
    paul.get_by_label("Audience").select_option(label="Spring readers")
    paul.get_by_label("Sender name").fill("Example Shop")
    paul.get_by_label("Sender address").fill("news@shop.example.com")
    paul.get_by_label("Subject").fill("Hello {{ first_name|default('friend') }}, spring is here")
    paul.get_by_label("HTML content").fill(HTML)
    paul.get_by_label("Category").select_option(label="Promotions (approval required)")
    paul.get_by_role("button", name="Save").click()
    expect(paul.get_by_role("heading", level=1)).to_contain_text("Spring sale")
    d = Delivery.objects.get(label="Spring sale")
    paul.get_by_role("button", name="Prepare").click()
    block = paul.locator("#deployment-block")
    expect(block).to_contain_text("Waiting for approval: content, target", timeout=30_000)
    expect(paul.get_by_test_id("state")).to_have_text("Waiting for approval: content, target")
    expect(paul.get_by_test_id("permission-banner")).to_have_count(0)  # nothing to confirm yet

    # 2. The approver approves the content and the target.
    alice = browse("approver")
    alice.goto("/")
    alice.locator("#waiting").get_by_role("link", name="Spring sale").click()
    alice.get_by_role("button", name="Approve content").click()
    expect(alice.get_by_test_id("content-approval")).to_contain_text("approver")
    alice.get_by_role("button", name="Approve target").click()
    expect(alice.get_by_test_id("target-approval")).to_contain_text("approver")
    expect(alice.get_by_test_id("state")).to_have_text("Ready to be delivered")

    # 3. The preparer may not confirm: the page says which role it needs.
    paul.reload()
    expect(paul.get_by_test_id("permission-banner")).to_have_text(
        "Confirming a send needs the “Start deliveries” role. Ask an administrator."
    )
    expect(paul.get_by_role("button", name="Confirm send")).to_have_count(0)

    # 4. The marketer confirms with the recap and watches the send finish.
    mia = browse("marketer")
    mia.goto("/")
    mia.locator("#waiting").get_by_role("link", name="Spring sale").click()
    mia.get_by_role("button", name="Confirm send").click()
    dialog = mia.get_by_role("dialog", name="Confirm send")
    expect(dialog).to_contain_text("Messages are ready to be sent immediately.")
    recap = dialog.get_by_test_id("confirm-recap")
    for text in (f"Spring sale ({d.human_id})", "Hello {{ first_name|default('friend') }}, spring is here",
                 "Example Shop <news@shop.example.com>", "Spring readers"):  # fmt: skip
        expect(recap).to_contain_text(text)
    expect(dialog.get_by_test_id("recap-recipients")).to_have_text("40 messages to deliver.")
    expect(dialog.get_by_test_id("recap-when")).to_have_text("Now")
    dialog.get_by_role("button", name="OK").click()
    block = mia.locator("#deployment-block")
    expect(block).to_contain_text("Finished sending", timeout=60_000)
    expect(mia.get_by_test_id("processed")).to_contain_text("40 of 40 processed")
    expect(mia.locator("#journal")).to_contain_text("Delivery started by user “Mia Marketer (marketer)”.")
    assert len(slow_relay.messages) == 40

    # 5. Recipients open it; the marketer computes the statistics in the Deployment window.
    expect(block.get_by_test_id("kpi-tiles").locator('[data-kpi="delivered"]')).to_contain_text("100.0%", timeout=30_000)
    mia.get_by_role("link", name="Deployment window").click()
    expect(mia.get_by_role("heading", level=1)).to_have_text(f"Deployment 'Spring sale ({d.human_id})'")
    before = mia.get_by_test_id("computed-at").inner_text()
    logs = list(SendingLog.objects.filter(delivery=d).order_by("id")[:10])
    TrackingLog.objects.bulk_create([TrackingLog(delivery=d, sending_log=log, kind=TrackingLog.Kind.OPEN, at=log.event_at) for log in logs])
    first_times_recompute(log_ids=[log.pk for log in logs])  # as the pixel's writer does
    time.sleep(1.1)  # "Computed at" shows seconds: the next computation must read differently
    mia.get_by_role("button", name="Compute stats").click()
    expect(mia.locator('[data-kpi="open"]')).to_contain_text("25.0%", timeout=30_000)  # 10 of 40 delivered
    expect(mia.get_by_test_id("computed-at")).not_to_have_text(before)
    expect(mia.get_by_test_id("charts").locator("rect.bar.opens")).to_have_count(1, timeout=15_000)

    # 6. A slow send: the delivery supervisor pauses it from the dashboard and stops it from the message.
    slow_relay.delay_control.delay = 0.25
    big = delivery_create(
        user=marketer,
        data={"label": "Clearance", "sender_name": "Example Shop", "sender_address": "news@shop.example.com",
              "subject": "Last days", "html": HTML, "audience": make_audience(make_profiles([f"c{i:03d}@example.com" for i in range(120)]), name="Clearance list")},
    )  # fmt: skip
    delivery_prepare(delivery=big, user=marketer)
    wait_for(lambda: Delivery.objects.get(pk=big.pk).state == State.READY)
    delivery_confirm(delivery=Delivery.objects.get(pk=big.pk), user=marketer)
    omar = browse("ops")
    omar.goto("/deployments/")
    row = omar.get_by_test_id("now-sending").locator(f'tr[data-id="{big.human_id}"]')
    expect(row.get_by_test_id("processed")).to_have_text(re.compile(r"^[1-9]\d* of 120 "), timeout=30_000)
    row.get_by_test_id("pause").click()
    expect(omar.locator(".messages")).to_contain_text("Sending paused.")
    wait_for(lambda: Delivery.objects.get(pk=big.pk).state == State.PAUSED)
    assert JournalEntry.objects.filter(delivery=big, user=ops, text="Delivery paused by Omar Ops (ops).").exists()
    expect(omar.get_by_test_id("now-sending").locator(f'tr[data-id="{big.human_id}"]')).to_contain_text("Paused")

    omar.goto(f"/deliveries/{big.pk}/")
    expect(omar.get_by_role("button", name="Resume")).to_have_count(0)  # resuming stays with Start deliveries
    omar.get_by_role("button", name="Stop sending").click()
    stop = omar.get_by_role("dialog", name="Stop sending")
    expect(stop).to_contain_text(f"Stop the send of “Clearance” ({big.human_id})?")
    stop.get_by_role("button", name="Stop sending").click()
    expect(omar.get_by_test_id("state")).to_have_text("Stopped", timeout=30_000)
    expect(omar.locator("#journal")).to_contain_text("Delivery stopped by Omar Ops (ops):")
    wait_for(lambda: not SendingLog.objects.filter(delivery=big, status__in=[SendingStatus.PENDING, SendingStatus.SENDING]).exists())
    cancelled = SendingLog.objects.filter(delivery=big, status=SendingStatus.CANCELLED).count()
    sent = SendingLog.objects.filter(delivery=big, status=SendingStatus.SENT).count()
    assert cancelled > 0 and sent + cancelled == 120 and len(slow_relay.messages) == 40 + sent  # nothing went out after the stop

    assert browse.problems == []
