"""Signed tracking tokens (deliveries/tokens.py): standard HMAC-SHA256, tampering refused."""

import base64
import hashlib
import hmac

import pytest

from deliveries.tokens import SALT, BadToken, make_token, read_token


def reference_signature(body: str, secret: str) -> str:
    key = hashlib.sha256((SALT + secret).encode()).digest()
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


@pytest.mark.parametrize("ids", [(1, None), (42, 7), (10**12, 36**5), (999_999, None)])
def test_tokens_are_hmac_sha256_of_their_ids_with_the_site_secret(ids, settings):
    for secret in ("first-secret", "another secret, rotated"):
        settings.SECRET_KEY = secret
        token = make_token(*ids)
        body, _, sig = token.rpartition(".")
        assert sig == reference_signature(body, secret)
        assert read_token(token) == ids
    settings.SECRET_KEY = "first-secret"
    with pytest.raises(BadToken):  # signed with the other secret
        read_token(token)


def test_tampered_truncated_and_overlong_tokens_are_refused(settings):
    settings.SECRET_KEY = "s3cret"
    token = make_token(42, 7)
    body, _, sig = token.rpartition(".")
    bad = {
        "another log id": f"{make_token(43, 7).split('.')[0]}.{body.split('.')[1]}.{sig}",
        "a flipped signature character": f"{body}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}",
        "truncated signature": token[:-1],
        "no signature": body,
        "empty": "",
        "too long": token + "x" * 64,
        "three ids": f"1.2.3.{sig}",
    }
    for case, value in bad.items():
        with pytest.raises(BadToken):
            read_token(value)
            pytest.fail(case)
