"""`make run` with non-default ports: the app sends to the sink `make run` starts, and builds its
links and CSRF trusted origins on the address it serves.

The real Makefile, process runner (system/procfile.py), Procfile and SMTP sink run; only
`migrate`/`seed_demo` are skipped (a stand-in `python` in a throw-away venv directory) so the test
leaves var/ alone. The last test runs the whole `make run` on a terminal, as a person does.
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
    """A venv directory whose `python` notes the management commands it is given (migrate,
    seed_demo) without running them, and, asked to run the Procfile, records the environment the
    processes get, then starts the real runner with the SMTP sink alone."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()  # newer than requirements.txt: no pip install
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ] && [ "$2" = "system.procfile" ]; then\n'
        f"  {sys.executable} -c 'import json, os; json.dump(dict(os.environ), open(\"{tmp_path}/env.tmp\", \"w\"))'\n"
        f"  mv {tmp_path}/env.tmp {tmp_path}/env.json\n"
        f"  exec {sys.executable} -m system.procfile smtp\n"
        "fi\n"
        f'echo "$*" >> {tmp_path}/python-calls\n'
    )
    python.chmod(0o755)
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


def _terminal_run(tmp_path, env):
    """`make -s run` on a pseudo-terminal, as in a person's shell: (pid, terminal fd, output so far)."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: a new session whose controlling terminal is the pty
        try:
            os.chdir(ROOT)
            os.execvpe("make", ["make", "-s", "run", f"VENV={tmp_path}/venv", f"BIN={tmp_path}/venv/bin"], env)
        finally:
            os._exit(127)
    output = bytearray()

    def pump():
        import select

        while True:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                output.extend(chunk)

    import threading

    threading.Thread(target=pump, daemon=True).start()
    return pid, fd, output


def _get(opener, url):
    from urllib.error import HTTPError, URLError

    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read().decode()
    except HTTPError as e:
        return e.code, e.read().decode()
    except (URLError, OSError):  # nothing listens yet
        return 0, ""


def test_make_run_on_a_terminal_is_healthy_at_once_and_ctrl_c_stops_everything_cleanly(tmp_path):
    """The whole `make run` (SQLite, the embedded broker, the local sink), run on a terminal: health
    is all ok within seconds of the start, the scheduler included (not after its first minute); a
    refused page is logged on one line; a missing page is the app's 404; Ctrl-C stops every process
    cleanly: no kill, no error line, exit 0."""
    import re
    from http.cookiejar import CookieJar
    from urllib.parse import urlencode
    from urllib.request import HTTPCookieProcessor, build_opener

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()  # newer than requirements.txt: the real environment, no pip install
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    port, sink = _free_port(), _free_port()
    env = {
        k: v for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "EMAIL_URL", "SITE_URL", "CSRF_TRUSTED_ORIGINS", "HOST",
                     "MAKEFLAGS", "MFLAGS", "DJANGO_SETTINGS_MODULE"} and not k.startswith(("DJANGO_ALLOW", "PYTEST"))
    }  # fmt: skip
    env.update(PORT=str(port), SMTP_SINK_PORT=str(sink), VAR_DIR=str(tmp_path / "var"), MAILBOX_DIR=str(tmp_path / "mailbox"),
               WORKER_CONCURRENCY="1", TERM="dumb")  # fmt: skip
    pid, fd, output = _terminal_run(tmp_path, env)
    base = f"http://127.0.0.1:{port}"
    opener = build_opener(HTTPCookieProcessor(CookieJar()))
    try:
        deadline = time.monotonic() + 120  # install check, migrate, demo data, then the processes start
        while _get(opener, f"{base}/login/")[0] != 200:
            assert time.monotonic() < deadline, output.decode(errors="replace")[-3000:]
            time.sleep(0.5)
        started = time.monotonic()
        body = {}
        while body.get("status") != "ok":
            assert time.monotonic() - started < 40, body  # a scheduler waiting for its first minute fails here
            time.sleep(0.5)
            body = json.loads(_get(opener, f"{base}/api/health/")[1])
        assert body["parts"]["workers"]["detail"] == "1 worker online." and body["parts"]["beat"]["status"] == "ok"

        # a refused page, then a missing one
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', _get(opener, f"{base}/login/")[1]).group(1)
        opener.open(f"{base}/login/", data=urlencode({"csrfmiddlewaretoken": token, "username": "preparer", "password": "dispatch"}).encode())
        status, page = _get(opener, f"{base}/deployments/")
        assert status == 403 and "Monitor deliveries" in page
        status, page = _get(opener, f"{base}/no-such-page/")
        assert status == 404 and "This page does not exist, or the link is no longer valid." in page
        time.sleep(1)  # the log lines reach the terminal
        before_stop = len(output)

        os.write(fd, b"\x03")  # Ctrl-C
        deadline = time.monotonic() + 60
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, output.decode(errors="replace")[-3000:]
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    text = output.decode(errors="replace")
    forbidden = [line for line in text.splitlines() if "Forbidden (Permission denied): /deployments/" in line]
    assert len(forbidden) == 1, text[-3000:]
    assert "Traceback" not in text and "No hostname was supplied" not in text
    stop = text[before_stop:]
    assert os.waitstatus_to_exitcode(status) == 0, stop
    assert "Every process stopped." in stop
    for noise in ("SIGKILL", "killed", "ERROR", "Error", "Interrupt", "make:", "exited with", "Traceback"):
        assert noise not in stop, f"{noise!r} in: {stop}"
