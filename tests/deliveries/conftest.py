import pytest

from audiences.models import Audience, AudienceMember, Profile
from deliveries.models import Delivery
from deliveries.services import delivery_create, delivery_prepare
from tests.factories import (
    AudienceFactory,
    AudienceMemberFactory,
    MessageCategoryFactory,
    ProfileFactory,
    QuarantineFactory,
)

HTML = (
    "<html><body><p>Hello {{ first_name|default('friend') }},</p>"
    '<p>Your plan: {{ attributes.plan|default("basic") }}. <a href="https://shop.example.com/offer">See the offer</a></p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · <a href="{{ mirror_url }}">View online</a></p></body></html>'
)


def make_profiles(specs):
    """Profiles in one statement; specs: a list of emails or of dicts of fields (tests/factories.ProfileFactory)."""
    profiles = []
    for i, spec in enumerate(specs):
        data = {"email": spec} if isinstance(spec, str) else dict(spec)
        data.setdefault("email", "")
        data.setdefault("first_name", f"First{i}")
        profiles.append(ProfileFactory.build(**data))
    return Profile.objects.bulk_create(profiles)


def make_audience(profiles, name="Audience"):
    """A list audience of these profiles."""
    audience = AudienceFactory(name=name, kind=Audience.Kind.LIST)
    AudienceMember.objects.bulk_create([AudienceMemberFactory.build(audience=audience, profile=p) for p in profiles])
    return audience


@pytest.fixture
def audience(db):
    profiles = make_profiles([f"person{i}@example.com" for i in range(5)])
    return make_audience(profiles)


@pytest.fixture
def new_delivery(marketer, audience):
    def _make(**overrides):
        data = {
            "label": "Spring sale",
            "sender_name": "Shop",
            "sender_address": "news@shop.example.com",
            "subject": "Hello {{ first_name|default('friend') }}",
            "html": HTML,
            "audience": audience,
        }
        data.update(overrides)
        return delivery_create(user=overrides.pop("user", marketer), data=data)

    return _make


@pytest.fixture
def ready_delivery(new_delivery, marketer, django_capture_on_commit_callbacks):
    def _make(**overrides):
        d = new_delivery(**overrides)
        with django_capture_on_commit_callbacks(execute=True):
            delivery_prepare(delivery=d, user=marketer)
        d.refresh_from_db()
        return d

    return _make


def quarantine(address, status):
    return QuarantineFactory(address=address.lower(), channel="email", status=status)


__all__ = ["Delivery", "make_audience", "make_profiles", "quarantine"]


def approval_category(name="Needs approval"):
    """A message category whose messages need approval (set by Administration)."""
    return MessageCategoryFactory(name=name, requires_approval=True)
