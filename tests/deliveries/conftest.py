import pytest
from django.utils import timezone

from audiences.models import Audience, AudienceMember, Profile, Quarantine
from deliveries.models import Delivery
from deliveries.services import delivery_create, delivery_prepare

HTML = (
    "<html><body><p>Hello {{ first_name|default('friend') }},</p>"
    '<p>Your plan: {{ attributes.plan|default("basic") }}. <a href="https://shop.example.com/offer">See the offer</a></p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · <a href="{{ mirror_url }}">View online</a></p></body></html>'
)


def make_profiles(specs):
    """specs: list of emails or dicts."""
    profiles = []
    for i, spec in enumerate(specs):
        data = {"email": spec} if isinstance(spec, str) else dict(spec)
        email = data.get("email", "")
        data.setdefault("first_name", f"First{i}")
        profiles.append(Profile(email_key=email.lower() or None, **data))
    return Profile.objects.bulk_create(profiles)


def make_audience(profiles, name="Audience"):
    audience = Audience.objects.create(name=name, kind=Audience.Kind.LIST)
    AudienceMember.objects.bulk_create([AudienceMember(audience=audience, profile=p) for p in profiles])
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
    return Quarantine.objects.create(address=address.lower(), channel="email", status=status, last_error_at=timezone.now())


__all__ = ["Delivery", "make_audience", "make_profiles", "quarantine"]


def approval_category(name="Needs approval"):
    """A message category whose messages need approval (set by Administration)."""
    from deliveries.models import MessageCategory

    return MessageCategory.objects.get_or_create(name=name, defaults={"requires_approval": True})[0]
