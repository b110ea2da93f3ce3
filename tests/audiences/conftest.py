import pytest

from audiences.emails import email_key, normalize_email
from audiences.models import Profile


@pytest.fixture
def make_profile(db):
    def _make(email="", **fields):
        email = normalize_email(email)
        return Profile.objects.create(email=email, email_key=email_key(email) or None, **fields)

    return _make
