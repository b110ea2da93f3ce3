"""In a real browser: a marketer imports a CSV with two bad rows and reads the report."""

import pytest
from playwright.sync_api import expect

from audiences.models import Audience, Profile

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CSV = (
    b"email,first_name,last_name,time_zone,favourite colour\n"
    b"ann@example.com,Ann,Lee,Europe/Paris,blue\n"
    b"bob(at)example.org,Bob,Martin,Europe/London,green\n"
    b"cyd@example.net,Cyd,Moreau,Mars/Olympus_Mons,red\n"
    b"dan@example.com,Dan,Smith,America/New_York,\n"
)


def test_marketer_imports_a_csv_with_two_bad_rows_and_sees_the_report_name_them(page, sign_in, marketer):
    Audience.objects.create(name="Spring campaign", kind=Audience.Kind.LIST)
    sign_in(page, "marketer")
    page.get_by_role("link", name="Profiles").click()
    page.get_by_role("link", name="Import a CSV file").click()
    page.get_by_label("CSV file (UTF-8, with a header)").set_input_files(
        files=[{"name": "spring.csv", "mimeType": "text/csv", "buffer": CSV}]
    )
    page.get_by_label("Add the profiles to the list").select_option(label="Spring campaign")
    page.get_by_role("button", name="Import").click()

    page.get_by_test_id("import-status").filter(has_text="Finished").wait_for()
    assert page.get_by_test_id("rejected-count").inner_text() == "2"
    table = page.locator("#rejections-table")
    rows = table.locator("tbody tr")
    assert rows.count() == 2
    assert "3" in rows.nth(0).inner_text() and "“bob(at)example.org” is not a valid email address." in rows.nth(0).inner_text()
    assert "4" in rows.nth(1).inner_text() and "“Mars/Olympus_Mons” is not a time zone name" in rows.nth(1).inner_text()
    assert page.get_by_role("link", name="Download the rejected rows (CSV)").is_visible()

    assert sorted(Profile.objects.values_list("email", flat=True)) == ["ann@example.com", "dan@example.com"]
    assert Profile.objects.get(email="ann@example.com").attributes == {"favourite_colour": "blue"}
    page.get_by_role("link", name="Spring campaign").click()
    assert page.locator("#audience-size").inner_text() == "2"


def settled(page):
    """Wait until htmx has no request in flight and has wired the content it swapped in."""
    # A locator, not wait_for_function: the page's Content-Security-Policy forbids evaluating strings.
    expect(page.locator(".htmx-request, .htmx-swapping, .htmx-settling")).to_have_count(0)


def test_preparer_builds_a_filter_and_the_count_follows_each_change(page, sign_in, preparer):
    Profile.objects.create(email="a@example.com", email_key="a@example.com", language="fr", attributes={"tier": "gold"})
    Profile.objects.create(email="b@example.com", email_key="b@example.com", language="fr")
    Profile.objects.create(email="c@example.com", email_key="c@example.com", language="en", attributes={"tier": "gold"})
    sign_in(page, "preparer")
    page.goto("/audiences/new/")
    page.get_by_label("Name").fill("French gold")
    page.get_by_label("Filter").check()
    page.get_by_role("button", name="Create").click()
    page.get_by_role("button", name="Add a group").click()
    page.locator("[data-condition='0-0']").wait_for()
    settled(page)
    page.get_by_label("Value").fill("fr")  # Language equals fr
    page.get_by_test_id("live-count").filter(has_text="2").wait_for()
    page.get_by_role("button", name="Add a condition").click()
    page.locator("[data-condition='0-1']").wait_for()
    settled(page)
    page.locator("[data-condition='0-1']").get_by_label("Field").select_option("attribute")
    page.get_by_label("Attribute name").fill("tier")
    page.locator("[data-condition='0-1']").get_by_label("Value").fill("gold")
    page.get_by_test_id("live-count").filter(has_text="1").wait_for()
    page.get_by_role("button", name="Save").click()
    assert page.locator("#audience-size").inner_text() == "1"
    assert "a@example.com" in page.locator("table.profiles").inner_text()
