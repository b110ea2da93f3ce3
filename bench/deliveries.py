"""Benchmarks of preparation and of the send, on PostgreSQL + Redis (bench/README.md).

    .venv/bin/python bench/deliveries.py prepare --recipients 100000
    .venv/bin/python bench/deliveries.py send --recipients 20000 --relay-delay-ms 10 --relay-max-conns 50 \\
        --worker prefork --worker solo --peers smtplib,postoffice
    .venv/bin/python bench/deliveries.py send --recipients 20000 --relay-delay-ms 0 --peers smtplib1

Uses DATABASE_URL (default postgres://postgres@127.0.0.1:5432/dispatch_bench, created if missing)
and CELERY_BROKER_URL (default redis://127.0.0.1:6379/9). `send` starts ONE relay for the whole run
(bench/relay.py: every reply after --relay-delay-ms, connections beyond --relay-max-conns refused
with 421), then, against it and in this order: the bare peers measured before, Dispatch with each
--worker setup (a real `celery worker`: `prefork` is `-c 2`, the production setup; `solo` one
process), django-post-office (its own virtualenv: `make bench-postoffice`), the bare peers again.
Each Dispatch run confirms a freshly prepared message (≈7 KB personalized HTML + text, 8 tracked
links) and times Confirm -> finished. The peers push the very bytes Dispatch sends:
- `smtplib`: Python's smtplib, as many connections (threads) as Dispatch uses in all, each its
  share of the pre-built messages (DECISIONS: the peer for the relay with latency);
- `smtplib1`: smtplib over ONE connection (the peer on a relay without latency).
Prints CPU per message by process (workers, PostgreSQL, the relay) and the workers' peak RSS.
"""

import argparse
import json
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dispatch_bench")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("CELERY_QUEUE", "dispatch-bench")
RELAY_PORT = int(os.environ.get("BENCH_RELAY_PORT", "2526"))
os.environ["EMAIL_URL"] = f"smtp://127.0.0.1:{RELAY_PORT}"
TICK = os.sysconf("SC_CLK_TCK")
OUT = ROOT / "var" / "bench"


def ensure_database():
    import psycopg

    url = os.environ["DATABASE_URL"]
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)


def setup_django():
    import django

    django.setup()


PARAGRAPH = (
    "<p>Dear {{ first_name|default('customer') }}, this season brings new arrivals chosen for "
    "{{ attributes.city|default('your city') }}. Our team selected fabrics, colours and cuts that "
    "last, at prices that stay fair. Members of the {{ attributes.plan|default('basic') }} plan get "
    "early access and free returns for thirty days.</p>\n"
)


def html_7kb() -> str:
    links = "".join(f'<li><a href="https://shop.example.com/c/{i}?utm=bench">Collection {i}</a></li>' for i in range(6))
    body = PARAGRAPH * 11
    return (
        "<html><body><h1>Hello {{ first_name }} {{ last_name }}</h1>" + body + f"<ul>{links}</ul>"
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · <a href="{{ mirror_url }}">View online</a></p></body></html>'
    )


def make_delivery(n: int, label: str):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection

    from accounts.roles import STANDARD_USERS
    from audiences.models import Audience
    from deliveries.models import Delivery, State
    from deliveries.services import delivery_create

    User = get_user_model()
    user, _ = User.objects.get_or_create(username="bench", defaults={"first_name": "Bench", "last_name": "User"})
    user.groups.set([Group.objects.get(name=STANDARD_USERS)])
    audience = Audience.objects.create(name=f"{label} {n}", kind=Audience.Kind.LIST)
    tag = f"{time.time_ns()}"
    with connection.cursor() as cur:
        cur.execute(
            """INSERT INTO audiences_profile (email, email_key, phone, first_name, last_name, language, time_zone,
                   attributes, email_denylisted, sms_denylisted, created_at, updated_at)
               SELECT 'b' || %s || '.' || g || '@bench.example.com', 'b' || %s || '.' || g || '@bench.example.com', '',
                      'First' || g, 'Last' || g, 'en', 'Europe/Paris',
                      jsonb_build_object('plan', CASE WHEN g %% 3 = 0 THEN 'gold' ELSE 'basic' END, 'city', 'City' || (g %% 50)),
                      false, false, now(), now()
               FROM generate_series(1, %s) g""",
            [tag, tag, n],
        )
        cur.execute(
            """INSERT INTO audiences_audiencemember (audience_id, profile_id, added_at)
               SELECT %s, id, now() FROM audiences_profile WHERE email_key LIKE %s""",
            [audience.pk, f"b{tag}.%"],
        )
    d = delivery_create(
        user=user,
        data={"label": label, "sender_name": "Bench Shop", "sender_address": "news@shop.example.com",
              "subject": "{{ first_name }}, new arrivals for {{ attributes.city }}", "html": html_7kb(), "audience": audience},  # fmt: skip
    )
    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
    return user, d


def prepare(n: int, quiet: bool = False):
    from deliveries.models import Delivery
    from deliveries.services import delivery_prepare_run

    user, d = make_delivery(n, "Bench prepare")
    t0 = time.perf_counter()
    delivery_prepare_run(delivery_id=d.pk)
    elapsed = time.perf_counter() - t0
    d = Delivery.objects.get(pk=d.pk)
    if not quiet:
        print(f"prepare: {n} recipients -> state {d.state}, to deliver {d.to_deliver_count}, {elapsed:.2f} s "
              f"({n / elapsed:,.0f} recipients/s)")  # fmt: skip
    return user, d


def wait_port(port, timeout=10):
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("relay did not start")


def built_messages(d, n: int | None = None):
    """The very messages the pipeline sends (same skeleton, same recipients), built before timing."""
    from deliveries.channels.email import MessageSkeleton
    from deliveries.models import SendingLog

    skeleton = MessageSkeleton(d)
    rows = SendingLog.objects.filter(delivery=d).order_by("id").values_list(
        "id", "address", "profile__first_name", "profile__last_name", "profile__attributes"
    )
    if n:
        rows = rows[:n]
    for i, address, first, last, attributes in rows.iterator():
        message = skeleton.build(sending_log_id=i, address=address,
                                 profile={"email": address, "first_name": first, "last_name": last, "attributes": attributes})  # fmt: skip
        message.address = address
        yield message


# --- measuring processes -------------------------------------------------------------------------
def _stat(pid: int):
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK  # ppid, utime + stime
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None, 0.0


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def _all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _descendants(root: int) -> set[int]:
    parents = {}
    for pid in _all_pids():
        ppid, _cpu = _stat(pid)
        if ppid is not None:
            parents[pid] = ppid
    found, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def _postgres_pids() -> set[int]:
    """The PostgreSQL backends serving the benchmark's database (not the other databases of a
    shared server), plus the server's own background processes (WAL writer, checkpointer)."""
    from django.db import connection

    name = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s OR backend_type IN "
                       "('walwriter', 'checkpointer', 'background writer')", [name])  # fmt: skip
        return {row[0] for row in cursor.fetchall()}


class Watch:
    """CPU seconds per group of processes over a window, and the peak RSS of the workers."""

    def __init__(self, groups: dict):
        self.groups = groups  # name -> callable returning the pids of the group now
        self.start = {}
        self.peak_rss = 0.0
        self._stop = threading.Event()
        self._cpu_seen = {}

    def _cpu(self, name):
        total = 0.0
        for pid in self.groups[name]():
            _ppid, cpu = _stat(pid)
            self._cpu_seen[(name, pid)] = max(self._cpu_seen.get((name, pid), 0.0), cpu)
        for (group, _pid), cpu in self._cpu_seen.items():
            if group == name:
                total += cpu
        return total

    def _sample(self):
        while not self._stop.wait(0.25):
            self.peak_rss = max(self.peak_rss, max((_rss_mb(p) for p in self.groups["workers"]()), default=0.0))
            for name in self.groups:
                self._cpu(name)  # processes that end before the window does keep their last reading

    def __enter__(self):
        self.start = {name: self._cpu(name) for name in self.groups}
        self.load = os.getloadavg()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.cpu = {name: self._cpu(name) - self.start[name] for name in self.groups}
        self.load_after = os.getloadavg()


# --- the peers ---------------------------------------------------------------------------------
def smtplib_peer(messages: list[tuple[str, bytes]], connections: int) -> float:
    """smtplib pushing pre-built messages over `connections` connections at once (threads)."""
    shares = [messages[i::connections] for i in range(connections)]
    errors = []

    def push(share):
        try:
            with smtplib.SMTP("127.0.0.1", RELAY_PORT) as conn:
                for to, data in share:
                    conn.sendmail("news@shop.example.com", [to], data)
        except Exception as e:  # reported: a peer that failed must not look fast
            errors.append(e)

    threads = [threading.Thread(target=push, args=(share,)) for share in shares]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"smtplib peer: {len(errors)} connection(s) failed: {errors[0]!r}")
    return len(messages) / seconds


def postoffice_peer(messages_file: Path) -> dict:
    python = ROOT / "bench" / ".venv-postoffice" / "bin" / "python"
    if not python.exists():
        raise SystemExit("django-post-office is not installed: run `make bench-postoffice` first.")
    out = subprocess.run([str(python), str(ROOT / "bench" / "postoffice" / "run.py"), "--messages", str(messages_file),
                          "--port", str(RELAY_PORT)], check=True, capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- Dispatch ------------------------------------------------------------------------------------
def run_dispatch(n: int, worker: str, connections: int, relay_pid: int) -> dict:
    from django.utils import timezone

    from deliveries.models import Delivery
    from deliveries.services import delivery_confirm

    user, d = prepare(n, quiet=True)
    pool = ["--pool", "solo", "--concurrency", "1"] if worker == "solo" else ["--pool", "prefork", "--concurrency", "2"]
    env = {**os.environ, "DEBUG": "0", "SECURE_SSL_REDIRECT": "0", "LOG_LEVEL": "WARNING", "SEND_CONNECTIONS": str(connections)}
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "celery"), "-A", "config", "worker", *pool, "-Q", os.environ["CELERY_QUEUE"],
         "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],  # fmt: skip
        cwd=ROOT, env=env,
    )
    try:
        time.sleep(4)  # the worker is up and its processes forked
        groups = {"workers": lambda: _descendants(proc.pid), "postgres": _postgres_pids, "relay": lambda: {relay_pid}}
        with Watch(groups) as watch:
            confirmed_at = timezone.now()
            delivery_confirm(delivery=d, user=user)
            while True:
                d = Delivery.objects.get(pk=d.pk)
                if d.state in ("finished", "failed", "stopped"):
                    break
                time.sleep(0.2)
        seconds = (d.finished_at - confirmed_at).total_seconds()
        return {"worker": worker, "messages": n, "sent": d.sent_count, "state": d.state, "seconds": seconds,
                "rate": d.sent_count / seconds, "cpu": watch.cpu, "rss_mb": watch.peak_rss, "load": watch.load,
                "load_after": watch.load_after}  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


SMTP_SINK = ROOT / "bench" / ".postfix" / "usr" / "sbin" / "smtp-sink"


def start_relay(args) -> subprocess.Popen:
    if args.relay == "smtp-sink":  # Postfix's C sink: no latency, no cap (make bench-smtp-sink)
        if not SMTP_SINK.exists():
            raise SystemExit("Postfix's smtp-sink is not there: run `make bench-smtp-sink` first.")
        env = {**os.environ, "LD_LIBRARY_PATH": str(SMTP_SINK.parents[2] / "usr" / "lib" / "postfix")}
        return subprocess.Popen([str(SMTP_SINK), "-u", "root", f"127.0.0.1:{RELAY_PORT}", "1024"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    return subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "relay.py"), "--port", str(RELAY_PORT), "--delay-ms", str(args.relay_delay_ms),
         "--max-conns", str(args.relay_max_conns)],  # fmt: skip
        stdout=subprocess.PIPE, text=True,
    )


def send(args):
    relay = start_relay(args)
    try:
        wait_port(RELAY_PORT)
        _user, sample = prepare(min(args.recipients, args.peer_messages), quiet=True)
        built = list(built_messages(sample))
        prebuilt = [(m.address, m.data) for m in built]
        size = sum(len(data) for _to, data in prebuilt) / len(prebuilt)
        workers = {"solo": 1, "prefork": 2}
        total_connections = min(args.relay_max_conns, args.connections * max(workers[w] for w in args.worker))
        peers = [p for p in args.peers.split(",") if p]
        kind = ("Postfix smtp-sink (C, no latency)" if args.relay == "smtp-sink" else
                f"bench/relay.py, {args.relay_delay_ms:g} ms before each reply (a round trip), at most {args.relay_max_conns} connections")  # fmt: skip
        print(f"relay: 127.0.0.1:{RELAY_PORT}, {kind}; messages of {size / 1024:.1f} KB on the wire (personalized HTML + text); "
              f"{os.cpu_count()} CPUs, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
        peer_connections = {"smtplib": total_connections, "smtplib1": 1}
        before = {p: smtplib_peer(prebuilt, peer_connections[p]) for p in peers if p in peer_connections}
        for p, rate in before.items():
            print(f"peer {p} ({peer_connections[p]} connection(s), pre-built bytes), before: {rate:,.0f} msg/s")
        results = []
        for worker in args.worker:
            r = run_dispatch(args.recipients, worker, args.connections, relay.pid)
            results.append(r)
            per = {k: v * 1e6 / max(r["sent"], 1) for k, v in r["cpu"].items()}
            print(f"dispatch {worker} ({workers[worker]} process(es) x {args.connections} connections): {r['sent']:,} sent "
                  f"of {r['messages']:,} in {r['seconds']:.1f} s = {r['rate']:,.0f} msg/s (state {r['state']}); CPU per message: "
                  + ", ".join(f"{k} {v:.0f} us" for k, v in per.items())
                  + f"; worker peak RSS {r['rss_mb']:.0f} MB; load {r['load'][0]:.2f} -> {r['load_after'][0]:.2f}")  # fmt: skip
        if "postoffice" in peers:
            OUT.mkdir(parents=True, exist_ok=True)
            path = OUT / "messages.jsonl"
            _user, po_delivery = prepare(args.recipients, quiet=True)
            with path.open("w") as f:
                for m in built_messages(po_delivery):
                    f.write(json.dumps({"from": "Bench Shop <news@shop.example.com>", "to": m.address, "subject": m.subject,
                                        "html": m.html, "text": m.text, "headers": m.headers}) + "\n")  # fmt: skip
            po = postoffice_peer(path)
            print(f"peer django-post-office 3.12 (its defaults: 1 process, 5 threads): {po['sent']:,} sent of "
                  f"{po['messages']:,} in {po['seconds']:.1f} s = {po['rate']:,.0f} msg/s, CPU {po['cpu'] * 1e6 / max(po['sent'], 1):.0f} us/message")  # fmt: skip
        after = {p: smtplib_peer(prebuilt, peer_connections[p]) for p in peers if p in peer_connections}
        for p, rate in after.items():
            print(f"peer {p}, after: {rate:,.0f} msg/s; mean {(before[p] + rate) / 2:,.0f} msg/s")
        for r in results:
            for p in before:
                mean = (before[p] + after[p]) / 2
                print(f"ratio dispatch {r['worker']} / {p}: {r['rate'] / mean:.2f}x")
            if "postoffice" in peers:
                print(f"ratio dispatch {r['worker']} / django-post-office: {r['rate'] / po['rate']:.1f}x")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            out, _err = relay.communicate(timeout=10)
            if out:
                print(out.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            relay.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["prepare", "send"])
    parser.add_argument("--recipients", type=int)
    parser.add_argument("--relay", choices=["latency", "smtp-sink"], default="latency",
                        help="bench/relay.py (latency, connection cap) or Postfix's smtp-sink (make bench-smtp-sink)")
    parser.add_argument("--relay-delay-ms", type=float, default=10.0)
    parser.add_argument("--relay-max-conns", type=int, default=50)
    parser.add_argument("--connections", type=int, default=25, help="SEND_CONNECTIONS of the workers (per process)")
    parser.add_argument("--worker", action="append", choices=["prefork", "solo"], help="worker setups to run (repeat)")
    parser.add_argument("--peers", default="smtplib", help="comma-separated: smtplib, smtplib1, postoffice")
    parser.add_argument("--peer-messages", type=int, default=5000, help="messages the smtplib peers push")
    args = parser.parse_args()
    args.worker = args.worker or ["prefork"]
    ensure_database()
    setup_django()
    if args.what == "prepare":
        prepare(args.recipients or 100_000)
    else:
        args.recipients = args.recipients or 20_000
        send(args)


if __name__ == "__main__":
    main()
