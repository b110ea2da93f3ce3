"""Signed tracking tokens: short, URL-safe, HMAC-SHA256 with the site's secret.

A token names a sending log and what it is for, and serves that purpose only:

- a click: `<log36>.<url36>.<sig>` (the tracked URL it redirects to);
- the open pixel, the mirror page, the unsubscribe link: `<p>-<log36>.<sig>` with p = `o`, `m`,
  `u`. The purpose is signed with the rest, so the pixel's URL (seen by image proxies, kept in
  logs) cannot unsubscribe anyone, nor show the message.

Tokens of mail sent before purposes existed (`<log36>.<sig>`) keep working for the three url-less
purposes. Anything tampered, truncated, unknown or used for another purpose raises BadToken;
callers then write nothing and never redirect.
"""

import base64
import hashlib
import hmac
from functools import lru_cache

from django.conf import settings

SALT = "dispatch.tracking.token"
PIXEL, MIRROR, UNSUBSCRIBE = "o", "m", "u"
PURPOSES = (PIXEL, MIRROR, UNSUBSCRIBE)
SIG_BYTES = 12  # 96 bits: forging one takes ~2**95 tries


class BadToken(ValueError):
    pass


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


@lru_cache(maxsize=4)
def _key(secret: str) -> bytes:
    # The key Django's salted_hmac derives from (salt, secret), derived once instead of per token.
    return hashlib.sha256((SALT + secret).encode()).digest()


@lru_cache(maxsize=4)
def _hmac_states(secret: str) -> tuple:
    """SHA-256 states with the HMAC key's inner and outer pads absorbed (RFC 2104), so a signature
    costs two small hash updates instead of setting the key up again (the pixel and the click
    check one per hit)."""
    key = _key(secret).ljust(64, b"\0")  # a 32-byte key, padded to SHA-256's block
    return hashlib.sha256(bytes(b ^ 0x36 for b in key)), hashlib.sha256(bytes(b ^ 0x5C for b in key))


def _sig(body: str) -> str:
    inner_pad, outer_pad = _hmac_states(settings.SECRET_KEY)
    inner = inner_pad.copy()
    inner.update(body.encode())
    outer = outer_pad.copy()
    outer.update(inner.digest())
    mac = outer.digest()[:SIG_BYTES]  # = hmac.new(key, body, sha256).digest()[:SIG_BYTES] (a test checks)
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def make_token(sending_log_id: int, url_id: int | None = None, *, purpose: str | None = None) -> str:
    """A click token (with `url_id`), a token for one url-less purpose (PIXEL, MIRROR,
    UNSUBSCRIBE), or, with neither, the old shape that serves all three (kept for tools that
    still make it; the app always names a purpose)."""
    if url_id is not None:
        body = f"{_b36(sending_log_id)}.{_b36(url_id)}"
    elif purpose is not None:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        body = f"{purpose}-{_b36(sending_log_id)}"
    else:
        body = _b36(sending_log_id)
    return f"{body}.{_sig(body)}"


def read_purpose_token(token: str, purpose: str) -> int:
    """The sending log a url-less token names for `purpose`, or BadToken (a click token, a token
    made for another purpose). An old token without a purpose serves every url-less purpose."""
    if not token or len(token) > 64:
        raise BadToken("empty or too long")
    body, _, sig = token.rpartition(".")
    if not body or not hmac.compare_digest(sig.encode(), _sig(body).encode()):
        raise BadToken("bad signature")
    made_for, dash, log36 = body.rpartition("-")
    if dash and made_for != purpose:
        raise BadToken("made for another purpose")
    try:
        return int(log36, 36)
    except ValueError:
        raise BadToken("bad body") from None


def read_token(token: str) -> tuple[int, int | None]:
    """Return (sending_log_id, url_id or None) of a click token or an old url-less one, or raise
    BadToken (a token with a purpose is read with read_purpose_token)."""
    if not token or len(token) > 64:
        raise BadToken("empty or too long")
    body, _, sig = token.rpartition(".")
    if not body or not hmac.compare_digest(sig.encode(), _sig(body).encode()):
        raise BadToken("bad signature")
    parts = body.split(".")
    try:
        ids = [int(p, 36) for p in parts]
    except ValueError:
        raise BadToken("bad body") from None
    if len(ids) == 1:
        return ids[0], None
    if len(ids) == 2:
        return ids[0], ids[1]
    raise BadToken("bad body")
