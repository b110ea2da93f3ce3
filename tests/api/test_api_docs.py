"""The API description shown at /api/docs/ (Swagger UI renders it as Markdown and strips HTML)."""

import re

import pytest

pytestmark = pytest.mark.django_db


def test_the_error_shape_in_the_description_survives_swagger_ui(client):
    schema = client.get("/api/schema/", {"format": "json"})
    assert schema.status_code == 200
    description = schema.json()["info"]["description"]
    assert '"detail": "a sentence saying what to do"' in description
    assert '"code": "a machine-readable code"' in description
    assert not re.search(r"<[A-Za-z]", description), "Swagger UI drops anything that looks like an HTML tag"
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b'src="/api/docs/?script="' in docs.content  # the page that shows it
    script = client.get("/api/docs/", {"script": ""})  # its script is a file (the pages' CSP runs no inline script)
    assert script.status_code == 200 and b"/api/schema/" in script.content


@pytest.mark.browser
def test_swagger_ui_shows_the_error_shape(page):
    page.goto("/api/docs/")
    info = page.locator(".information-container .info")
    info.get_by_text("a sentence saying what to do", exact=False).wait_for()
    text = info.inner_text()
    assert '"detail": "a sentence saying what to do"' in text
    assert '"code": "a machine-readable code"' in text
