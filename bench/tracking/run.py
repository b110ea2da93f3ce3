"""Benchmark: open pixel and click redirect vs a bare WSGI "hello", same gunicorn settings, same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dispatch_trk_bench \\
        .venv/bin/python bench/tracking/run.py [--seconds 15] [--connections 32] [--workers 4]

Needs `wrk` on the PATH (Debian/Ubuntu: `apt-get install -y wrk`; see bench/README.md). Steps:
migrates the database, seeds one sent message with --recipients sending logs and its tracked
links, starts two gunicorn servers on 127.0.0.1 with identical settings (the bare callable in
bench/tracking/hello.py, and Dispatch's config.wsgi with DEBUG off), runs wrk against the hello
callable, the pixel and the click (each request a different recipient's token, round robin),
then checks that every hit wrk completed was recorded as a tracking log (a second after the last
round: the server writes its hits in bulk, tracking/buffer.py). Prints a Markdown table.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dispatch_trk_bench")
SERVER_ENV = {
    "DEBUG": "0",
    "SECURE_SSL_REDIRECT": "0",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "SITE_URL": "http://127.0.0.1:8182",
    "LOG_LEVEL": "WARNING",
    "CONN_MAX_AGE": "600",
}
os.environ.update(SERVER_ENV)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def ensure_database(url: str) -> None:
    if not url.startswith("postgres"):
        return
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def seed(recipients: int, folder: Path) -> tuple[Path, Path, int]:
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from deliveries.links import tracked_urls_sync
    from deliveries.models import Delivery, SendingLog, SendingStatus, State
    from deliveries.tokens import make_token

    call_command("migrate", verbosity=0)
    delivery = Delivery.objects.create(
        label="Tracking benchmark",
        state=State.FINISHED,
        html='<p>Hi</p><a href="https://shop.example.com/sale">Sale</a><a href="{{ unsubscribe_url }}">Unsubscribe</a>',
    )
    url_id = tracked_urls_sync(delivery=delivery)["https://shop.example.com/sale"]
    sent_at = timezone.now() - timezone.timedelta(hours=1)
    SendingLog.objects.bulk_create(
        [
            SendingLog(delivery=delivery, address=f"r{i}@bench.example", status=SendingStatus.SENT, event_at=sent_at, attempts=1)
            for i in range(recipients)
        ],
        batch_size=5000,
    )
    ids = list(SendingLog.objects.filter(delivery=delivery).values_list("id", flat=True))
    from django.db import connection

    with connection.cursor() as cursor:  # fresh planner statistics, as autovacuum keeps them in production
        cursor.execute("ANALYZE")
    pixel, click = folder / "pixel.txt", folder / "click.txt"
    pixel.write_text("".join(f"/t/o/{make_token(i)}.gif\n" for i in ids))
    click.write_text("".join(f"/t/c/{make_token(i, url_id)}\n" for i in ids))
    return pixel, click, delivery.pk


def tracking_count(delivery_id: int) -> int:
    from django.db import connection

    from tracking.models import TrackingLog

    connection.close()
    return TrackingLog.objects.filter(delivery_id=delivery_id).count()


def gunicorn(app: str, port: int, workers: int) -> subprocess.Popen:
    cmd = [
        str(ROOT / ".venv/bin/gunicorn"), app, "--chdir", str(ROOT), "--pythonpath", str(Path(__file__).parent),
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--worker-class", "sync", "--backlog", "2048", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, **SERVER_ENV}, start_new_session=True)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/t/o/warmup.gif" if "config" in app else f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except Exception:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"gunicorn {app} did not start on port {port}")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)


def wrk(url: str, seconds: int, connections: int, paths: Path | None) -> dict:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if paths:
        cmd += ["-s", str(Path(__file__).with_name("rotate.lua"))]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, env={**os.environ, "PATHS": str(paths or "")}, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p99_ms": p99_ms, "requests": total, "non_2xx_3xx": int(bad.group(1)) if bad else 0, "socket_errors": errors.group(1) if errors else "", "raw": out}


LOAD = ""


def main():
    global LOAD
    LOAD = " ".join(f"{x:.1f}" for x in os.getloadavg())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--recipients", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3, help="hello, pixel, click in turn, this many times; medians reported")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--buffer-seconds", type=float, default=None,
        help="TRACKING_BUFFER_SECONDS for the Dispatch server (default: the setting's default; 0 writes each hit before answering)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.buffer_seconds is not None:
        SERVER_ENV["TRACKING_BUFFER_SECONDS"] = str(args.buffer_seconds)

    ensure_database(os.environ["DATABASE_URL"])
    folder = Path(tempfile.mkdtemp(prefix="dispatch-bench-"))
    pixel, click, delivery_id = seed(args.recipients, folder)
    hello = gunicorn("hello:app", 8181, args.workers)
    django_app = gunicorn("config.wsgi:application", 8182, args.workers)
    rounds: dict[str, list[dict]] = {"bare WSGI hello": [], "open pixel": [], "click redirect": []}
    try:
        before = tracking_count(delivery_id)
        for _ in range(args.rounds):  # interleaved, so a burst of load elsewhere hits all three alike
            rounds["bare WSGI hello"].append(wrk("http://127.0.0.1:8181/", args.seconds, args.connections, None))
            rounds["open pixel"].append(wrk("http://127.0.0.1:8182/", args.seconds, args.connections, pixel))
            rounds["click redirect"].append(wrk("http://127.0.0.1:8182/", args.seconds, args.connections, click))
        time.sleep(1)
        recorded = tracking_count(delivery_id) - before
    finally:
        stop(hello)
        stop(django_app)

    def median(values):
        values = sorted(values)
        return values[len(values) // 2]

    hello_rps = [r["rps"] for r in rounds["bare WSGI hello"]]
    print(
        f"\ngunicorn sync, {args.workers} workers, 127.0.0.1; wrk -t2 -c{args.connections} -d{args.seconds}s, "
        f"{args.rounds} interleaved rounds (medians); {os.cpu_count()} CPUs; load average before: {LOAD}; "
        f"TRACKING_BUFFER_SECONDS={SERVER_ENV.get('TRACKING_BUFFER_SECONDS', 'default')}\n"
    )
    print("| endpoint | requests/s (median) | % of bare (median of rounds) | p99 latency (median) | requests (all rounds) | non-2xx/3xx |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in rounds.items():
        rps, p99 = median([r["rps"] for r in runs]), median([r["p99_ms"] for r in runs])
        total, bad = sum(r["requests"] for r in runs), sum(r["non_2xx_3xx"] for r in runs)
        # % of bare: the median of each round's ratio (a round runs the three back to back, so a
        # burst of load elsewhere weighs on both sides of its ratio alike).
        ratio = median([r["rps"] / h for r, h in zip(runs, hello_rps, strict=True)])
        print(f"| {name} | {rps:,.0f} | {100 * ratio:.0f}% | {p99:.1f} ms | {total:,} | {bad} |")
    hits = sum(r["requests"] for r in rounds["open pixel"] + rounds["click redirect"])
    print(f"\ntracking logs recorded: {recorded:,} for {hits:,} completed hits ({'every hit recorded' if recorded >= hits else 'MISSING HITS'})")
    per_round = {name: ", ".join(f"{r['rps']:,.0f}" for r in runs) for name, runs in rounds.items()}
    print("rounds (requests/s): " + "; ".join(f"{name}: {values}" for name, values in per_round.items()))
    if args.verbose:
        for name, runs in rounds.items():
            for r in runs:
                print(f"\n--- {name}\n{r['raw']}")


if __name__ == "__main__":
    main()
