from email import message_from_bytes, policy

import pytest

from deliveries.services import delivery_confirm

from .conftest import make_audience, make_profiles

pytestmark = pytest.mark.django_db


def test_each_message_is_valid_mime_personalized_and_tracked(ready_delivery, marketer, smtp_server, settings, django_capture_on_commit_callbacks):
    settings.SITE_URL = "https://dispatch.example.org"
    profiles = make_profiles(
        [{"email": "Ann.Lee@example.com", "first_name": "Ann", "attributes": {"plan": "gold"}},
         {"email": "bob@example.com", "first_name": "Bøb"},
         {"email": "carl@example.com", "first_name": ""}]  # fmt: skip
    )
    d = ready_delivery(audience=make_audience(profiles), subject="Offre spéciale pour {{ first_name|default('vous') }}")
    with django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    assert len(smtp_server.messages) == 3
    ids = set()
    for received in smtp_server.messages:
        msg = message_from_bytes(received.data, policy=policy.strict)  # raises on malformed headers
        assert msg.get_content_type() == "multipart/alternative"
        assert msg["Date"] and msg["From"] == "Shop <news@shop.example.com>"
        ids.add(msg["Message-ID"])
        text = msg.get_body(preferencelist=("plain",)).get_content()
        html = msg.get_body(preferencelist=("html",)).get_content()
        assert msg["List-Unsubscribe"].startswith("<https://dispatch.example.org/t/u/")
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "https://dispatch.example.org/t/o/" in html  # open pixel
        assert 'href="https://dispatch.example.org/t/c/' in html and "shop.example.com/offer" not in html
        assert "https://dispatch.example.org/t/c/" in text  # tracked in the text part too
        rcpt = received.rcpt_tos[0]
        if rcpt == "Ann.Lee@example.com":
            assert msg["Subject"] == "Offre spéciale pour Ann"
            assert "Hello Ann," in html and "Your plan: gold." in html
            assert msg["To"] == "Ann <Ann.Lee@example.com>"
        if rcpt == "bob@example.com":
            assert "Hello Bøb," in html and "Your plan: basic." in text
        if rcpt == "carl@example.com":
            assert "Hello friend," in text and msg["Subject"] == "Offre spéciale pour vous"
    assert len(ids) == 3
    assert sorted(r.rcpt_tos[0] for r in smtp_server.messages) == ["Ann.Lee@example.com", "bob@example.com", "carl@example.com"]


def test_html_content_is_autoescaped_for_each_recipient(ready_delivery, marketer, smtp_server, django_capture_on_commit_callbacks):
    profiles = make_profiles([{"email": "x@example.com", "first_name": "<script>alert(1)</script>"}])
    d = ready_delivery(audience=make_audience(profiles))
    with django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    html = smtp_server.messages[0].message.get_body(preferencelist=("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
