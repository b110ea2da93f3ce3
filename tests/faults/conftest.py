"""The fault suite's own services: one private PostgreSQL (initdb in a temporary folder, its own port)
and one private Redis (its own port) for the test session, never the machine's shared ones; and,
per test, a real `celery worker -c 2` (prefork), a real beat and a real SMTP server on loopback.

The app runs in subprocesses pointed at these services (tests/faults/scenario.py prepares and
confirms); the tests read the results straight from the private database."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from system.smtp import free_port
from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None) if Path("/usr/lib/postgresql").exists() else None


def _as_postgres(cmd: list[str], **kwargs):
    """Run a PostgreSQL tool as the `postgres` user when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


class PrivatePostgres:
    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.data = folder / "data"
        self.url = f"postgres://postgres@127.0.0.1:{port}/faults"

    def ctl(self, *args: str) -> None:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "60", *args])

    def start(self) -> None:
        self.ctl("-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")

    def stop(self, mode: str = "fast") -> None:
        self.ctl("-m", mode, "stop")

    def sql(self, query: str, params=()) -> list[tuple]:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=faults", autocommit=True) as conn:
            return conn.execute(query, params).fetchall()


class PrivateRedis:
    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--daemonize", "yes", "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log"),
                        "--pidfile", str(self.folder / "redis.pid")], check=True)  # fmt: skip
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "the private Redis did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "the private Redis did not stop"
            time.sleep(0.1)


@pytest.fixture(scope="session")
def private_postgres():
    require(PG_BIN is not None and (PG_BIN / "initdb").exists(), "PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    folder = Path(tempfile.mkdtemp(prefix="dispatch-faults-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
    server = PrivatePostgres(folder, free_port())
    _as_postgres([str(PG_BIN / "initdb"), "-D", str(server.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
    server.start()
    _as_postgres([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "faults"])
    yield server
    try:
        server.stop("immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def private_redis():
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    folder = Path(tempfile.mkdtemp(prefix="dispatch-faults-redis-"))
    server = PrivateRedis(folder, free_port())
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


# The settings of the app under test: short timeouts so that each fault heals within the test.
FAULT_SETTINGS = {
    "SEND_CONNECTIONS": "4",
    "SEND_CHUNK": "20",
    "SEND_BATCH": "400",
    "CLAIM_TIMEOUT_SECONDS": "20",
    "RECONCILE_AFTER_SECONDS": "15",
    "SEND_TICK_SECONDS": "2",
    "SEND_RELAY_DOWN_SECONDS": "60",
    "LOG_LEVEL": "WARNING",
}


@pytest.fixture(scope="session")
def fault_app(private_postgres, private_redis, tmp_path_factory):
    """The environment of the app's processes (migrated once)."""
    var = tmp_path_factory.mktemp("faults-var")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    env.update(FAULT_SETTINGS, DATABASE_URL=private_postgres.url, CELERY_BROKER_URL=private_redis.url, VAR_DIR=str(var),
               CELERY_QUEUE="faults", PYTHONUNBUFFERED="1")  # fmt: skip
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, capture_output=True)
    return env


class Run:
    """One test's processes: the SMTP server (in this process), a worker and a beat."""

    def __init__(self, env: dict, pg: PrivatePostgres, redis: PrivateRedis, smtp, folder: Path):
        self.env, self.pg, self.redis, self.smtp, self.folder = env, pg, redis, smtp, folder
        self.procs: dict[str, subprocess.Popen] = {}

    def scenario(self, *args: str) -> dict:
        out = subprocess.run([sys.executable, str(ROOT / "tests" / "faults" / "scenario.py"), *args], cwd=ROOT, env=self.env,
                             check=True, capture_output=True, text=True)  # fmt: skip
        return json.loads(out.stdout.strip().splitlines()[-1])

    def start(self, name: str) -> None:
        celery = str(Path(sys.executable).parent / "celery")
        args = {
            "worker": [celery, "-A", "config", "worker", "--pool", "prefork", "--concurrency", "2", "-Q", "faults",
                       "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],  # fmt: skip
            "beat": [celery, "-A", "config", "beat", "--loglevel", "WARNING", "-s", str(self.folder / "beat-schedule")],
        }[name]
        log = open(self.folder / f"{name}.log", "a")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def worker_children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.procs["worker"].pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def delivery(self, delivery_id: int) -> dict:
        state, sent, failed, processed, to_deliver = self.pg.sql(
            "SELECT state, sent_count, failed_count, processed_count, to_deliver_count FROM deliveries_delivery WHERE id = %s", [delivery_id]
        )[0]
        return {"state": state, "sent": sent, "failed": failed, "processed": processed, "to_deliver": to_deliver}

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except Exception:  # noqa: S110 - the database may be the fault being injected
                pass
            time.sleep(0.25)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.folder.glob("*.log"))
        raise AssertionError(f"timed out waiting for {what}\n{logs}")

    def logs(self, delivery_id: int) -> dict[str, list[str]]:
        rows = self.pg.sql("SELECT status, address FROM deliveries_sendinglog WHERE delivery_id = %s", [delivery_id])
        by_status: dict[str, list[str]] = {}
        for status, address in rows:
            by_status.setdefault(status, []).append(address)
        return by_status

    def journal(self, delivery_id: int) -> list[str]:
        return [r[0] for r in self.pg.sql("SELECT text FROM deliveries_journalentry WHERE delivery_id = %s ORDER BY id", [delivery_id])]


@pytest.fixture
def fault_run(fault_app, private_postgres, private_redis, tmp_path):
    from system.smtp import RecordingHandler, start_sink

    handler = RecordingHandler()
    handler.delay_seconds = 0.02  # a relay that takes its time: the send lasts long enough to hurt it
    controller = start_sink(handler)
    env = dict(fault_app, EMAIL_URL=f"smtp://127.0.0.1:{controller.port}")
    run = Run(env, private_postgres, private_redis, handler, tmp_path)
    run.relay_port = controller.port
    yield run
    run.stop_all()
    controller.stop()
