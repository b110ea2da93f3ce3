"""Benchmarks of issue 4: preparation time and send throughput, on PostgreSQL + Redis.

    .venv/bin/python bench/deliveries.py prepare --recipients 100000
    .venv/bin/python bench/deliveries.py send --recipients 20000

Uses DATABASE_URL (default postgres://postgres@127.0.0.1:5432/dispatch_bench, created if missing)
and CELERY_BROKER_URL (default redis://127.0.0.1:6379/9). `send` starts a discarding SMTP sink
(bench/sink.py) and ONE real `celery worker` process (solo pool), measures from Confirm send to
"finished", and prints it beside a baseline measured in the same run: Python's smtplib pushing
pre-built messages of the same size over one connection to the same sink.
"""

import argparse
import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dispatch_bench")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("CELERY_QUEUE", "dispatch-bench")
SINK_PORT = int(os.environ.get("BENCH_SINK_PORT", "2525"))
os.environ["EMAIL_URL"] = f"smtp://127.0.0.1:{SINK_PORT}"


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


def html_5kb() -> str:
    links = "".join(f'<li><a href="https://shop.example.com/c/{i}?utm=bench">Collection {i}</a></li>' for i in range(6))
    body = PARAGRAPH * 11
    return (
        "<html><body><h1>Hello {{ first_name }} {{ last_name }}</h1>" + body + f"<ul>{links}</ul>"
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · <a href="{{ mirror_url }}">View online</a></p></body></html>'
    )


def make_delivery(n: int, label: str):
    from django.contrib.auth import get_user_model
    from django.db import connection

    from accounts.roles import STANDARD_USERS
    from audiences.models import Audience
    from deliveries.models import Delivery, State
    from deliveries.services import delivery_create

    User = get_user_model()
    user, _ = User.objects.get_or_create(username="bench", defaults={"first_name": "Bench", "last_name": "User"})
    from django.contrib.auth.models import Group

    user.groups.set([Group.objects.get(name=STANDARD_USERS)])
    audience = Audience.objects.create(name=f"{label} {n}", kind=Audience.Kind.LIST)
    tag = f"{int(time.time())}"
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
              "subject": "{{ first_name }}, new arrivals for {{ attributes.city }}", "html": html_5kb(), "audience": audience},  # fmt: skip
    )
    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
    return user, d


def prepare(n: int):
    from deliveries.models import Delivery
    from deliveries.services import delivery_prepare_run

    user, d = make_delivery(n, "Bench prepare")
    t0 = time.perf_counter()
    delivery_prepare_run(delivery_id=d.pk)
    elapsed = time.perf_counter() - t0
    d = Delivery.objects.get(pk=d.pk)
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
    raise RuntimeError("sink did not start")


def prebuilt_messages(d, n: int) -> list[tuple[str, bytes]]:
    """The very bytes the pipeline sends (same skeleton, same recipients), built before timing."""
    from deliveries.channels.email import MessageSkeleton
    from deliveries.models import SendingLog

    skeleton = MessageSkeleton(d)
    rows = SendingLog.objects.filter(delivery=d).order_by("id").values_list(
        "id", "address", "profile__first_name", "profile__last_name", "profile__attributes"
    )[:n]
    return [
        (address, skeleton.build(sending_log_id=i, address=address, profile={"email": address, "first_name": f, "last_name": last, "attributes": a}).data)
        for i, address, f, last, a in rows
    ]


def baseline(messages: list[tuple[str, bytes]]) -> float:
    """smtplib pushing pre-built messages over one connection: the same bytes as the pipeline's."""
    t0 = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", SINK_PORT) as conn:
        for to, data in messages:
            conn.sendmail("news@shop.example.com", [to], data)
    return len(messages) / (time.perf_counter() - t0)


def send(n: int):
    from django.utils import timezone

    from deliveries.models import Delivery
    from deliveries.services import delivery_confirm

    sink = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sink.py"), "--port", str(SINK_PORT)], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        wait_port(SINK_PORT)
        user, d = prepare(n)
        prebuilt = prebuilt_messages(d, min(n, 5000))
        size = sum(len(data) for _to, data in prebuilt) / len(prebuilt)
        base_before = baseline(prebuilt)
        env = {**os.environ, "DEBUG": "0", "SECURE_SSL_REDIRECT": "0", "LOG_LEVEL": "WARNING"}
        worker = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "celery"), "-A", "config", "worker", "--pool", "solo", "--concurrency", "1",
             "-Q", os.environ["CELERY_QUEUE"], "--loglevel", "WARNING", "--without-gossip", "--without-mingle"],  # fmt: skip
            cwd=ROOT, env=env,
        )
        time.sleep(3)
        t0 = time.perf_counter()
        confirmed_at = timezone.now()
        delivery_confirm(delivery=d, user=user)
        while True:
            d = Delivery.objects.get(pk=d.pk)
            if d.state in ("finished", "failed", "stopped"):
                break
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        server = (d.finished_at - confirmed_at).total_seconds()
        rate = n / server
        base_after = baseline(prebuilt)
        base = (base_before + base_after) / 2  # measured before and after the send: the machine's load varies
        print(f"send: {n} messages ({size / 1024:.1f} KB on the wire each, personalized HTML + text) through one worker process: "
              f"{server:.1f} s, {rate:,.0f} msg/s (state {d.state}, sent {d.sent_count}, wall {wall:.1f} s)")  # fmt: skip
        print(f"baseline: smtplib pushing the same messages, pre-built, over one connection: {base:,.0f} msg/s "
              f"(before {base_before:,.0f}, after {base_after:,.0f})")  # fmt: skip
        print(f"ratio: {rate / base:.2f}x the baseline (target >= 0.5x)")
    finally:
        for proc in (worker, sink):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["prepare", "send"])
    parser.add_argument("--recipients", type=int)
    args = parser.parse_args()
    ensure_database()
    setup_django()
    if args.what == "prepare":
        prepare(args.recipients or 100_000)
    else:
        send(args.recipients or 20_000)


if __name__ == "__main__":
    main()
