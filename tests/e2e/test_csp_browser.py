"""The Content-Security-Policy (issue 15 item 10) keeps the pages working in a real browser: the
message preview (a sandboxed srcdoc iframe that inherits the policy) shows the marketer's HTML
with its inline styles and data images, and the page's own behaviours (confirm before Stop, submit
on change) run from app.js; nothing is reported as blocked."""

import pytest
from playwright.sync_api import expect

from deliveries.services import delivery_create
from tests.deliveries.conftest import make_audience, make_profiles

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DOT = "data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="
HTML = (
    '<html><body><p id="greet" style="color: rgb(200, 0, 0)">Hello {{ first_name|default("friend") }}</p>'
    f'<img id="dot" src="{DOT}" width="1" height="1"><a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a></body></html>'
)


def test_the_preview_and_the_page_work_under_the_policy(page, sign_in, marketer):
    profiles = make_profiles([{"email": "ann@example.com", "first_name": "Ann"}, {"email": "bob@example.com", "first_name": "Bob"}])
    d = delivery_create(
        user=marketer,
        data={"label": "CSP", "sender_address": "news@shop.example.com", "subject": "Hi", "html": HTML, "audience": make_audience(profiles)},
    )
    violations = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    sign_in(page, "marketer")
    response = page.goto(f"/deliveries/{d.pk}/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    preview = page.frame_locator("iframe[title='Message preview']")
    greet = preview.locator("#greet")
    expect(greet).to_have_text("Hello Ann")
    assert greet.evaluate("e => getComputedStyle(e).color") == "rgb(200, 0, 0)"  # inline style applied
    assert preview.locator("#dot").evaluate("e => e.complete && e.naturalWidth") == 1  # data image loaded
    page.select_option("#preview-profile", label="bob@example.com — Bob")  # submit on change (app.js)
    expect(preview.locator("#greet")).to_have_text("Hello Bob")
    assert violations == []


def test_the_django_admin_works_under_the_policy(page, sign_in, admin, marketer):
    admin.is_staff = admin.is_superuser = True
    admin.save()
    violations = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    sign_in(page, "admin")
    page.goto(f"/admin/accounts/user/{marketer.pk}/change/")
    expect(page.get_by_role("heading", name="marketer")).to_be_visible()
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    assert violations == []
