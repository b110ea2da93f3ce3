"""Issue 15, item 9: API tokens can be revoked, end with a password change, may expire.

Before: the same token for ever, surviving a password change, with no way to revoke it."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def get_token(username="marketer", password=PASSWORD) -> str:
    response = APIClient().post("/api/auth/token/", {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["token"]


def me(key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get("/api/me/")


def test_a_user_revokes_their_token(marketer):
    key = get_token()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.delete("/api/me/token/").status_code == 204
    assert me(key).status_code == 401
    assert get_token() != key  # a new one on request


def test_an_admin_revokes_anyones_token_and_nobody_else_can(marketer, preparer, admin):
    key = get_token()
    other = APIClient()
    other.force_authenticate(preparer)
    assert other.delete(f"/api/users/{marketer.pk}/token/").status_code == 403
    assert me(key).status_code == 200
    boss = APIClient()
    boss.force_authenticate(admin)
    assert boss.delete(f"/api/users/{marketer.pk}/token/").status_code == 204
    assert me(key).status_code == 401


def test_a_password_change_ends_the_token(marketer):
    key = get_token()
    marketer.set_password("a-new-long-passphrase")
    marketer.save()
    assert me(key).status_code == 401
    assert get_token(password="a-new-long-passphrase") != key


def test_tokens_expire_when_a_lifetime_is_set(marketer, settings):
    key = get_token()
    settings.API_TOKEN_TTL_HOURS = 24
    assert me(key).status_code == 200
    Token.objects.filter(key=key).update(created=timezone.now() - timedelta(hours=25))
    expired = me(key)
    assert expired.status_code == 401
    assert expired.json()["detail"] == "This API token expired: get a new one with POST /api/auth/token/."
    fresh = get_token()
    assert fresh != key and me(fresh).status_code == 200
