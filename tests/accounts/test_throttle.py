"""Issue 15, item 2: passwords cannot be guessed without limit (login page and token endpoint).

Before: 40 wrong passwords in 11 s on /login/ and then the right one worked; the token endpoint
trusted X-Forwarded-For (a new value per try was never throttled) and counted per web process.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.throttle import SignInThrottled, client_address, sign_in_check
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def login(client, username, password, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def token(username, password, **extra):
    return APIClient().post("/api/auth/token/", {"username": username, "password": password}, format="json", **extra)


def test_login_page_slows_a_username_after_a_few_failures(client, admin, settings):
    settings.LOGIN_USERNAME_FREE_FAILURES = 3
    for _ in range(3):
        assert login(client, "admin", "wrong", REMOTE_ADDR="203.0.113.7").status_code == 200
    refused = login(client, "admin", PASSWORD, REMOTE_ADDR="203.0.113.7")  # even the right password waits
    assert refused.status_code == 429
    assert "Too many failed sign-ins for this login: wait 1 second and try again." in refused.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_admin_is_never_locked_out(client, admin, settings):
    """An address that signed in as the admin before is not slowed by someone else's guessing,
    and from a new address the right password works once the (bounded) delay has passed."""
    settings.LOGIN_USERNAME_FREE_FAILURES = 2
    settings.LOGIN_USERNAME_MAX_DELAY = 1
    assert login(client, "admin", PASSWORD, REMOTE_ADDR="198.51.100.1").status_code == 302  # the admin's usual address
    client.logout()
    for i in range(6):  # an attacker from elsewhere
        login(client, "admin", f"guess{i}", REMOTE_ADDR="203.0.113.9")
    assert login(client, "admin", PASSWORD, REMOTE_ADDR="203.0.113.9").status_code == 429
    assert login(client, "admin", PASSWORD, REMOTE_ADDR="198.51.100.1").status_code == 302
    client.logout()
    deadline = time.monotonic() + 10
    while (status := login(client, "admin", PASSWORD, REMOTE_ADDR="192.0.2.44").status_code) == 429:
        assert time.monotonic() < deadline, "the admin stayed locked out"
    assert status == 302


def test_an_address_that_fails_too_often_is_refused_whatever_the_login(client, admin, settings):
    settings.LOGIN_ADDRESS_LIMIT = 5
    for i in range(5):
        login(client, f"user{i}", "wrong", REMOTE_ADDR="203.0.113.20")
    refused = login(client, "someone-else", "wrong", REMOTE_ADDR="203.0.113.20")
    assert refused.status_code == 429
    assert "Too many failed sign-ins from your network address" in refused.content.decode()
    assert login(client, "admin", PASSWORD, REMOTE_ADDR="203.0.113.21").status_code == 302  # another address is not


def test_token_endpoint_ignores_x_forwarded_for_unless_a_proxy_is_trusted(admin, settings):
    settings.LOGIN_ADDRESS_LIMIT = 4
    for i in range(4):
        assert token("admin", "wrong", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}").status_code == 401
    refused = token("admin", PASSWORD, HTTP_X_FORWARDED_FOR="10.0.0.99")
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert "network address" in refused.json()["detail"]


def test_the_trusted_proxy_count_picks_the_address_the_proxy_saw(rf, settings):
    request = rf.get("/", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5", REMOTE_ADDR="10.0.0.1")
    settings.TRUSTED_PROXY_COUNT = 0
    assert client_address(request) == "10.0.0.1"
    settings.TRUSTED_PROXY_COUNT = 1
    assert client_address(request) == "203.0.113.5"  # what the client wrote before it is ignored
    settings.TRUSTED_PROXY_COUNT = 2
    assert client_address(request) == "6.6.6.6"


def test_token_endpoint_slows_a_username_too(admin, settings):
    settings.LOGIN_USERNAME_FREE_FAILURES = 2
    for _ in range(2):
        assert token("admin", "wrong", REMOTE_ADDR="203.0.113.30").status_code == 401
    refused = token("admin", PASSWORD, REMOTE_ADDR="203.0.113.30")
    assert refused.status_code == 429
    assert "for this login" in refused.json()["detail"]


def test_counters_are_shared_by_every_process(settings):
    """Failures counted by another process (another web worker) refuse the next try here."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "config.settings"}
    code = (
        "import django; django.setup()\n"
        "from accounts.throttle import sign_in_failed\n"
        "for _ in range(30): sign_in_failed(username='shared-admin', address='198.51.100.77')\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=60)
    with pytest.raises(SignInThrottled):
        sign_in_check(username="shared-admin", address="198.51.100.77")
