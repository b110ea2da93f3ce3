"""Browser: the profile page shows the message sent to the profile with its open and click."""

import pytest
from django.test import Client

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_profile_page_shows_the_message_with_its_open_and_click(page, sign_in, marketer, make_sent):
    sent = make_sent()
    recipient = Client(HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0")
    recipient.get(sent.open_path())
    assert recipient.get(sent.click_path("https://shop.example.com/sale")).status_code == 302

    sign_in(page, "marketer")
    page.goto(f"/profiles/{sent.profile.pk}/")
    row = page.locator(f"#profile-history tr[data-delivery='{sent.delivery.pk}']")
    row.wait_for()
    cells = row.locator("td")
    assert "Summer sale" in cells.nth(1).inner_text()
    assert cells.nth(2).inner_text().startswith("Sent")
    assert (cells.nth(3).inner_text(), cells.nth(4).inner_text()) == ("1", "1")
    assert row.get_by_role("link", name="Mirror page").get_attribute("href").startswith("/t/m/")
