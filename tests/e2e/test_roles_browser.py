import pytest

from accounts import roles

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_login_page_loads(page):
    page.goto("/")
    assert "/login/" in page.url
    assert page.get_by_role("heading", name="Sign in to Dispatch").is_visible()


def test_admin_gives_preparer_the_standard_users_group_and_sees_the_new_role(page, sign_in, make_user):
    make_user("admin", roles.ADMINISTRATORS)
    make_user("preparer", roles.PREPARERS)
    sign_in(page, "admin")
    page.get_by_role("link", name="Users & roles").click()
    row = page.locator("tr[data-user=preparer]")
    assert "Start deliveries" not in row.locator(".roles-cell").inner_text()
    row.get_by_label("Standard users").check()
    row.get_by_role("button", name="Save groups of preparer").click()
    page.get_by_text("Groups of preparer saved.").wait_for()
    row = page.locator("tr[data-user=preparer]")
    assert "Start deliveries" in row.locator(".roles-cell").inner_text()
    assert "added Standard users" in page.locator("#audit").inner_text()
