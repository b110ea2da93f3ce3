import re

import pytest
from playwright.sync_api import expect

from deliveries.models import Delivery, State
from deliveries.services import delivery_create
from tests.deliveries.conftest import HTML, make_audience, make_profiles

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def make_message(user, n=40):
    profiles = make_profiles([f"b{i}@example.com" for i in range(n)])
    return delivery_create(
        user=user,
        data={"label": "Browser send", "sender_name": "Shop", "sender_address": "news@shop.example.com",
              "subject": "Hi", "html": HTML, "audience": make_audience(profiles)},  # fmt: skip
    )


def test_marketer_prepares_cancels_then_confirms_and_watches_the_send_finish(page, sign_in, marketer, celery_worker, smtp_server, settings):
    settings.SEND_CHUNK = 5
    d = make_message(marketer)
    sign_in(page, "marketer")
    page.goto(f"/deliveries/{d.pk}/")
    page.get_by_role("button", name="Prepare").click()
    expect(page.locator("#deployment-block")).to_contain_text("Send preparation completed. Confirm to start sending.", timeout=30_000)
    # the page follows the new state by itself: the Confirm send button appears without a reload

    page.get_by_role("button", name="Confirm send").click(timeout=15_000)
    dialog = page.get_by_role("dialog", name="Confirm send")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Messages are ready to be sent immediately.")
    expect(dialog).to_contain_text("40 messages to deliver.")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert Delivery.objects.get(pk=d.pk).state == State.READY and smtp_server.messages == []

    page.get_by_role("button", name="Confirm send").click()
    page.get_by_role("dialog", name="Confirm send").get_by_role("button", name="OK").click()
    block = page.locator("#deployment-block")
    expect(block).to_contain_text(re.compile(r"Sending|Finished sending"))
    expect(block).to_contain_text("Finished sending", timeout=60_000)
    expect(block).to_contain_text("All messages have been processed.")
    expect(page.get_by_test_id("processed")).to_contain_text("40 of 40 processed")
    expect(page.locator("#journal")).to_contain_text("Delivery started by user “Mia Marketer (marketer)”.")
    assert len(smtp_server.messages) == 40


def test_preparer_sees_the_banner_and_no_confirm_button(page, sign_in, preparer, marketer, settings):
    d = make_message(marketer, n=3)
    from deliveries.services import delivery_prepare_run

    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
    delivery_prepare_run(delivery_id=d.pk)
    sign_in(page, "preparer")
    page.goto(f"/deliveries/{d.pk}/")
    expect(page.get_by_test_id("permission-banner")).to_have_text("Confirming a send needs the “Start deliveries” role. Ask an administrator.")
    expect(page.get_by_role("button", name="Confirm send")).to_have_count(0)
