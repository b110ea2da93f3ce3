"""Every page links a favicon, so browsers stop asking for /favicon.ico (a 404 in the console)."""

import re

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("signed_in", [False, True])
def test_pages_link_a_favicon_that_is_served(client, marketer, signed_in):
    if signed_in:
        client.force_login(marketer)
    response = client.get("/login/" if not signed_in else "/", follow=True)
    assert response.status_code == 200
    link = re.search(r'<link rel="icon" href="([^"]+)"', response.content.decode())
    assert link, "no <link rel=\"icon\"> in the page's head"
    icon = client.get(link.group(1))
    assert icon.status_code == 200
    assert icon["Content-Type"].startswith("image/svg+xml")
    assert b"<svg" in b"".join(icon.streaming_content if icon.streaming else [icon.content])
