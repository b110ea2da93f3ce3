from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.links import tracked_urls_sync
from deliveries.models import SendingStatus, State, TrackedUrl
from deliveries.tokens import MIRROR, PIXEL, UNSUBSCRIBE, make_token
from tests.factories import DeliveryFactory, ProfileFactory, SendingLogFactory

HTML = """<html><body>
<p>Hello {{ first_name }},</p>
<p><a href="https://shop.example.com/sale">Big sale</a></p>
<p><a href="https://shop.example.com/new">New in</a> <a href="https://shop.example.com/faq">FAQ</a></p>
<p><a href="https://example.com/account/{{ attributes.account }}">Your account</a></p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · <a href="{{ mirror_url }}">View online</a></p>
</body></html>"""


class Sent:
    """A sent message with one recipient, and the recipient's tracking URLs."""

    def __init__(self, delivery, profile, log):
        self.delivery, self.profile, self.log = delivery, profile, log
        self.urls = {u.url: u for u in TrackedUrl.objects.filter(delivery=delivery)}

    def url_id(self, url: str) -> int:
        return self.urls[url].pk

    def open_path(self, log=None) -> str:
        return f"/t/o/{make_token((log or self.log).pk, purpose=PIXEL)}.gif"

    def click_path(self, url: str, log=None) -> str:
        return f"/t/c/{make_token((log or self.log).pk, self.url_id(url))}"

    def unsubscribe_path(self, log=None) -> str:
        return f"/t/u/{make_token((log or self.log).pk, purpose=UNSUBSCRIBE)}"

    def mirror_path(self, log=None) -> str:
        return f"/t/m/{make_token((log or self.log).pk, purpose=MIRROR)}"

    def refresh(self):
        self.log.refresh_from_db()
        self.profile.refresh_from_db()
        return self


@pytest.fixture
def make_sent(db):
    def _make(*, email="ann@example.com", sent_ago=timedelta(hours=1), html=HTML, delivery=None, **profile_fields):
        if delivery is None:
            delivery = DeliveryFactory(
                label="Summer sale", subject="Hello {{ first_name }}", html=html, state=State.FINISHED,
                sender_name="Shop", started_at=timezone.now() - sent_ago,
            )
            tracked_urls_sync(delivery=delivery)
        profile_fields.setdefault("first_name", "Ann")
        profile_fields.setdefault("attributes", {"account": "A-42"})
        profile = ProfileFactory(email=email, **profile_fields)
        log = SendingLogFactory(
            delivery=delivery, profile=profile, address=email.lower(), status=SendingStatus.SENT,
            event_at=timezone.now() - sent_ago, attempts=1,
        )
        return Sent(delivery, profile, log)

    return _make


@pytest.fixture
def sent(make_sent):
    return make_sent()
