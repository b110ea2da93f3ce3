"""`make run` with non-default ports: the app sends to the sink `make run` starts, and builds its
links and CSRF trusted origins on the address it serves.

The real Makefile, honcho, Procfile and SMTP sink run; only `migrate`/`seed_demo` are skipped (a
stand-in `python` in a throw-away venv directory) so the test leaves var/ alone.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REAL_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def fake_venv(tmp_path):
    """A venv directory whose `python` only notes its arguments and whose `honcho` records the
    environment the processes get, then starts the real Procfile's SMTP sink."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()  # newer than requirements.txt: no pip install
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/python-calls\n')
    honcho = venv / "bin" / "honcho"
    honcho.write_text(
        "#!/bin/sh\n"
        f"{sys.executable} -c 'import json, os; json.dump(dict(os.environ), open(\"{tmp_path}/env.tmp\", \"w\"))'\n"
        f"mv {tmp_path}/env.tmp {tmp_path}/env.json\n"
        f'exec {REAL_BIN}/honcho -d {ROOT} -f {ROOT}/Procfile "$@" smtp\n'
    )
    python.chmod(0o755)
    honcho.chmod(0o755)
    return venv


def test_make_run_on_other_ports_sends_to_its_sink_and_links_to_its_port(fake_venv, tmp_path):
    sink_port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"EMAIL_URL", "SITE_URL", "CSRF_TRUSTED_ORIGINS", "HOST", "PORT", "SMTP_SINK_PORT", "MAKEFLAGS"}
        and not k.startswith("DJANGO_ALLOW")
    }
    env.update(PORT="8450", SMTP_SINK_PORT=str(sink_port), VAR_DIR=str(tmp_path / "var"),
               MAILBOX_DIR=str(tmp_path / "mailbox"))  # fmt: skip
    make = subprocess.Popen(
        ["make", "-s", "run", f"VENV={fake_venv}", f"BIN={fake_venv}/bin"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _listening(sink_port):
            assert make.poll() is None, make.stdout.read()
            assert time.monotonic() < deadline, "the sink never listened on SMTP_SINK_PORT"
            time.sleep(0.2)
        process_env = json.loads((tmp_path / "env.json").read_text())
        # What the web process and the workers do with that environment: send a message, build links.
        script = (
            "import django, json; django.setup()\n"
            "from django.conf import settings; from django.core.mail import send_mail\n"
            "send_mail('Port check', 'body', 'shop@example.com', ['reader@example.com'])\n"
            "print(json.dumps({'site': settings.SITE_URL, 'csrf': settings.CSRF_TRUSTED_ORIGINS}))\n"
        )
        sent = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**process_env, "DJANGO_SETTINGS_MODULE": "config.settings"})  # fmt: skip
        assert sent.returncode == 0, sent.stderr  # refused on 1025 before: nothing listens there
        app = json.loads(sent.stdout.strip().splitlines()[-1])
        index = (tmp_path / "mailbox" / "index.jsonl").read_text()
        assert "Port check" in index  # the sink of `make run` received it
        assert app == {"site": "http://127.0.0.1:8450", "csrf": ["http://127.0.0.1:8450"]}
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        output = make.communicate(timeout=30)[0]
    assert "Dispatch is starting on http://127.0.0.1:8450/" in output
    assert "http://127.0.0.1:8450/dev/mailbox/" in output
    assert "http://127.0.0.1:8000" not in output
    assert (tmp_path / "python-calls").read_text().splitlines() == ["manage.py migrate --noinput", "manage.py seed_demo"]


def test_settings_the_user_gave_win(fake_venv, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "HOST"}}
    env.update(PORT="8450", SMTP_SINK_PORT=str(_free_port()), EMAIL_URL="smtp://relay.example.org:587?tls=1",
               SITE_URL="https://dispatch.example.org", VAR_DIR=str(tmp_path / "var"),
               MAILBOX_DIR=str(tmp_path / "mailbox"))  # fmt: skip
    make = subprocess.Popen(["make", "-s", "run", f"VENV={fake_venv}", f"BIN={fake_venv}/bin"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "env.json").exists():
            assert make.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        process_env = json.loads((tmp_path / "env.json").read_text())
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.communicate(timeout=30)
    assert process_env["EMAIL_URL"] == "smtp://relay.example.org:587?tls=1"
    assert process_env["SITE_URL"] == "https://dispatch.example.org"
