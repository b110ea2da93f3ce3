"""Issue 15, item 10: safer defaults.

Before: `seed_demo` (run by every `make run`) reset changed passwords and re-granted superuser;
superuser status was not in the role audit; app pages had no Content-Security-Policy; the
X-Forwarded-Proto header was trusted whatever the deployment; mirror pages could navigate the
top window."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from accounts.models import RoleAuditLog
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def test_seed_demo_keeps_a_changed_password_and_a_removed_superuser(settings):
    settings.DEMO_PASSWORD = "demo-pass-123"
    call_command("seed_demo", quiet=True)
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("my-own-secret-passphrase")
    admin.is_superuser = False
    admin.save()
    call_command("seed_demo", quiet=True)
    admin.refresh_from_db()
    assert admin.check_password("my-own-secret-passphrase") and not admin.check_password("demo-pass-123")
    assert not admin.is_superuser


def test_superuser_status_is_recorded_in_the_role_audit(admin, marketer):
    client = Client()
    admin.is_superuser = admin.is_staff = True
    admin.save()
    client.force_login(admin)
    form = {
        "username": "marketer", "password": marketer.password, "first_name": "Mia", "last_name": "Marketer", "email": "",
        "is_active": "on", "is_staff": "on", "is_superuser": "on", "groups": [],
        "last_login_0": "", "last_login_1": "", "date_joined_0": "2026-01-01", "date_joined_1": "10:00:00",
    }  # fmt: skip
    response = client.post(f"/admin/accounts/user/{marketer.pk}/change/", form)
    assert response.status_code == 302 and "/login/" not in response["Location"], response.content.decode()[:3000]
    granted = RoleAuditLog.objects.get(user=marketer, action=RoleAuditLog.Action.SUPERUSER_GRANTED)
    assert (granted.actor, granted.source, granted.after) == (admin, "admin", ["superuser"])
    marketer.refresh_from_db()
    marketer.is_superuser = False
    marketer.save()
    revoked = RoleAuditLog.objects.get(user=marketer, action=RoleAuditLog.Action.SUPERUSER_REVOKED)
    assert (revoked.actor, revoked.source) == (None, "system")


def test_app_pages_carry_a_content_security_policy(client, marketer):
    client.force_login(marketer)
    policy = client.get("/deliveries/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "object-src 'none'" in policy and "base-uri 'none'" in policy
    assert "unsafe-eval" not in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert client.get("/login/")["Content-Security-Policy"] == policy


def test_no_page_template_has_an_inline_script_or_handler():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "templates"
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.html")
        if re.search(r"<script(?![^>]*\bsrc=)|\son[a-z]+=", p.read_text())
    ]
    assert offenders == []


def test_the_https_header_is_trusted_only_when_a_setting_names_it():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = "import django; django.setup(); from django.conf import settings; print(getattr(settings, 'SECURE_PROXY_SSL_HEADER', None))"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONPATH": str(root), "DEBUG": "0", "SECRET_KEY": "x" * 60}
    env.pop("PROXY_SSL_HEADER", None)
    run = lambda e: subprocess.run([sys.executable, "-c", code], env=e, cwd=root, capture_output=True, text=True, check=True).stdout.strip()  # noqa: E731
    assert run(env) == "None"
    assert run({**env, "PROXY_SSL_HEADER": "X-Forwarded-Proto"}) == "('HTTP_X_FORWARDED_PROTO', 'https')"


def test_password_still_signs_in(client, marketer):
    assert client.post("/login/", {"username": "marketer", "password": PASSWORD}).status_code == 302
