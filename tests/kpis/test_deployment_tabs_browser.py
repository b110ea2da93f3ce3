"""The Deployment window's tabs swap their content without reloading the page."""

import re

import pytest
from playwright.sync_api import expect

from deliveries.models import FailureReason, FailureType, SendingStatus

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_tabs_filters_and_pages_swap_the_section_without_reloading(page, sign_in, marketer, make_delivery, add_logs):
    d = make_delivery("Summer sale")
    add_logs(d, 60, SendingStatus.SENT)
    add_logs(d, 3, SendingStatus.FAILED, FailureType.HARD, FailureReason.USER_UNKNOWN)
    sign_in(page, "marketer")
    page.goto(f"/deliveries/{d.pk}/deployment/")
    page.evaluate("window.stillTheSamePage = true")  # gone if the browser loads a page

    page.get_by_role("link", name="Sending logs").click()
    table = page.get_by_test_id("tab-sending")
    expect(table.locator("tbody tr")).to_have_count(50)
    expect(page).to_have_url(re.compile(r"/deployment/\?tab=sending$"))
    page.get_by_role("link", name="Next →").click()
    expect(page.get_by_text("Page 2 of 2")).to_be_visible()
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(page).to_have_url(re.compile(r"[?&]status=failed"))
    page.get_by_role("link", name="Exclusion causes").click()
    expect(page.get_by_test_id("tab-causes")).to_contain_text("No exclusion.")
    assert page.evaluate("window.stillTheSamePage") is True
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Deployment 'Summer sale ({d.human_id})'")

    page.go_back()  # the address and the content follow the history
    expect(page.get_by_test_id("tab-sending").locator("tbody tr")).to_have_count(3)
