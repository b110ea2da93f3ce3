"""Sign-in throttling, the same for the login page and the API token endpoint.

Two limits, counted in the cache every process shares (Redis in production, a file cache on the
embedded default: `CACHE_URL`):

- **Per client address**: at most LOGIN_ADDRESS_LIMIT failed sign-ins per LOGIN_WINDOW_SECONDS;
  past it the address is refused until the window ends. The address is the connection's, or the
  one the TRUSTED_PROXY_COUNT proxies in front say (X-Forwarded-For is never trusted otherwise).
- **Per username**: after LOGIN_USERNAME_FREE_FAILURES failures, each further try for that login
  waits 1 s, 2 s, 4 s… (at most LOGIN_USERNAME_MAX_DELAY) after the last failure: guessing slows
  to a crawl, and the person is never locked out (a refused try is not counted, so waiting the
  delay always gives a real try). A client address that signed in as that login before is not
  slowed by others' failures: an attacker guessing the admin's password does not keep the admin out.
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.cache import cache
from django.utils.translation import ngettext

from .errors import DispatchError

KNOWN_ADDRESS_SECONDS = 30 * 86400  # an address that signed in as a login is remembered this long


class SignInThrottled(DispatchError):
    status = 429
    code = "throttled"

    def __init__(self, message: str, *, wait: int):
        super().__init__(message)
        self.wait = wait


def client_address(request) -> str:
    """The client's network address: the connection's, or the one the trusted proxies report.

    With TRUSTED_PROXY_COUNT = n, the n proxies in front each appended the address they received
    from to X-Forwarded-For: the client is the n-th entry from the end (anything before it was
    written by the client and proves nothing)."""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    count = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0))
    if count <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if not forwarded:
        return remote
    return forwarded[-count] if len(forwarded) >= count else forwarded[0]


def _h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _keys(username: str, address: str) -> dict[str, str]:
    user = _h((username or "").strip().lower())
    return {
        "address": f"signin:address:{_h(address)}",
        "user_failures": f"signin:user:{user}:failures",
        "user_last": f"signin:user:{user}:last",
        "known": f"signin:known:{user}:{_h(address)}",
    }


def _window() -> int:
    return int(getattr(settings, "LOGIN_WINDOW_SECONDS", 900))


def _delay(failures: int) -> int:
    free = int(getattr(settings, "LOGIN_USERNAME_FREE_FAILURES", 5))
    if failures < free:
        return 0
    return min(int(getattr(settings, "LOGIN_USERNAME_MAX_DELAY", 60)), 2 ** min(failures - free, 30))


def sign_in_check(*, username: str, address: str, now: float | None = None) -> None:
    """Raise SignInThrottled (with a sentence saying how long to wait) when this try must wait."""
    now = time.time() if now is None else now
    keys = _keys(username, address)
    values = cache.get_many(list(keys.values()))
    if (values.get(keys["address"]) or 0) >= int(getattr(settings, "LOGIN_ADDRESS_LIMIT", 20)):
        minutes = max(1, _window() // 60)
        raise SignInThrottled(
            ngettext(
                "Too many failed sign-ins from your network address: try again in %(n)d minute.",
                "Too many failed sign-ins from your network address: try again in %(n)d minutes.",
                minutes,
            )
            % {"n": minutes},
            wait=_window(),
        )
    if values.get(keys["known"]):
        return
    delay = _delay(values.get(keys["user_failures"]) or 0)
    last = values.get(keys["user_last"]) or 0
    wait = int(last + delay - now + 0.999)
    if delay and wait > 0:
        raise SignInThrottled(
            ngettext(
                "Too many failed sign-ins for this login: wait %(n)d second and try again.",
                "Too many failed sign-ins for this login: wait %(n)d seconds and try again.",
                wait,
            )
            % {"n": wait},
            wait=wait,
        )


def _incr(key: str, timeout: int) -> int:
    cache.add(key, 0, timeout)
    try:
        return cache.incr(key)
    except ValueError:  # expired between the two calls
        cache.set(key, 1, timeout)
        return 1


def sign_in_failed(*, username: str, address: str, now: float | None = None) -> None:
    """Count a failed try (wrong login or password) for the address and the username."""
    now = time.time() if now is None else now
    keys = _keys(username, address)
    _incr(keys["address"], _window())
    _incr(keys["user_failures"], _window())
    cache.set(keys["user_last"], now, _window())


def sign_in_succeeded(*, username: str, address: str) -> None:
    """The login's failures are forgotten and this address is known for it; the address's own
    count stays (signing in to one's own account must not reset a guesser's budget)."""
    keys = _keys(username, address)
    cache.delete_many([keys["user_failures"], keys["user_last"]])
    cache.set(keys["known"], 1, KNOWN_ADDRESS_SECONDS)


def sign_in(*, request, username: str, password: str):
    """Check the throttle, authenticate, count the outcome. Returns the active user or None (wrong
    login or password); raises SignInThrottled when the try must wait."""
    from django.contrib.auth import authenticate

    address = client_address(request)
    sign_in_check(username=username, address=address)
    user = authenticate(request, username=username, password=password)
    if user is None or not user.is_active:
        sign_in_failed(username=username, address=address)
        return None
    sign_in_succeeded(username=username, address=address)
    return user

