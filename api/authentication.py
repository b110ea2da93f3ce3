"""API token authentication with an optional lifetime (API_TOKEN_TTL_HOURS; 0: no expiry)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

EXPIRED = "This API token expired: get a new one with POST /api/auth/token/."


def token_expired(token) -> bool:
    hours = float(getattr(settings, "API_TOKEN_TTL_HOURS", 0) or 0)
    return bool(hours) and token.created < timezone.now() - timedelta(hours=hours)


class ExpiringTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        if token_expired(token):
            token.delete()
            raise AuthenticationFailed(EXPIRED, code="token_expired")
        return user, token
