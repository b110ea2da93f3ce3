"""Benchmark: KPI recompute, live progress and CSV export at a million sending logs (issue 6).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dispatch_bench \\
        .venv/bin/python bench/kpis.py --logs 1000000 --tracking 300000

Targets: recompute < 500 ms; progress endpoint < 20 ms; CSV export of every sending log in flat memory.

Migrates the database, then (once; `--fresh` rebuilds) inserts one delivery "bench-kpis-<logs>" with
its sending logs and tracking logs in a few set-based statements (generate_series), VACUUM ANALYZEs,
and measures in this process:
- `kpis_compute` (the two GROUP BY queries and the snapshot write), median and best of --runs;
- GET /api/deliveries/<id>/progress/ and the Deployment block partial through Django's test client
  (auth, session, view, serializer: everything but the network), median and p95;
- the sending-logs CSV export: the whole streamed response read to the end, with this process's
  peak RSS before and after (flat memory means the peak does not grow with the row count).
"""

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(label: str, logs: int, tracking: int) -> int:
    from django.db import connection, transaction
    from django.utils import timezone

    from deliveries.models import Delivery, State, TrackedUrl

    now = timezone.now()
    with transaction.atomic():
        d = Delivery.objects.create(
            label=label,
            state=State.IN_PROGRESS,
            started_at=now - timezone.timedelta(hours=2),
            to_deliver_count=logs,
            processed_count=logs * 99 // 100,
            sent_count=logs * 93 // 100,
            failed_count=logs * 6 // 100,
        )
        url = TrackedUrl.objects.create(delivery=d, url="https://shop.example.com/sale", label="Sale")
        with connection.cursor() as cur:
            # 93% sent, 4% failed hard, 2% failed soft, 1% pending; event times spread over two hours.
            cur.execute(
                """
                INSERT INTO deliveries_sendinglog
                    (delivery_id, address, status, failure_type, failure_reason, failure_text, attempts,
                     event_at, message_id)
                SELECT %s, 'r' || g || '@bench.example.com',
                       CASE WHEN g %% 100 < 93 THEN 'sent' WHEN g %% 100 < 99 THEN 'failed' ELSE 'pending' END,
                       CASE WHEN g %% 100 BETWEEN 93 AND 96 THEN 'hard' WHEN g %% 100 BETWEEN 97 AND 98 THEN 'soft'
                            ELSE '' END,
                       CASE WHEN g %% 100 BETWEEN 93 AND 96 THEN 'user_unknown'
                            WHEN g %% 100 BETWEEN 97 AND 98 THEN 'mailbox_full' ELSE '' END,
                       '', 1,
                       CASE WHEN g %% 100 < 99 THEN now() - ((%s - g) * 7200.0 / %s) * interval '1 second' END,
                       ''
                FROM generate_series(1, %s) g
                """,
                [d.pk, logs, logs, logs],
            )
            cur.execute("SELECT min(id) FROM deliveries_sendinglog WHERE delivery_id = %s", [d.pk])
            first_id = cur.fetchone()[0]
            # 300,000 events on random delivered logs: 70% opens, 20% clicks, 5% mirror, 5% opt-out; 10% machines.
            cur.execute(
                """
                INSERT INTO tracking_trackinglog
                    (at, delivery_id, sending_log_id, kind, tracked_url_id, user_agent, ip_hash, is_machine,
                     machine_reason)
                SELECT now() - (random() * 100000) * interval '1 second', %s,
                       %s + floor(random() * %s)::bigint,
                       CASE WHEN g %% 20 < 14 THEN 'open' WHEN g %% 20 < 18 THEN 'click'
                            WHEN g %% 20 = 18 THEN 'mirror' ELSE 'optout' END,
                       CASE WHEN g %% 20 BETWEEN 14 AND 17 THEN %s END,
                       'Mozilla/5.0', '', g %% 10 = 0, CASE WHEN g %% 10 = 0 THEN 'scanner' ELSE '' END
                FROM generate_series(1, %s) g
                """,
                [d.pk, first_id, logs, url.pk, tracking],
            )
            # What tracking's writers keep on each sending log: its first human open (any human
            # event) and first human click.
            cur.execute(
                """
                UPDATE deliveries_sendinglog s SET first_open_at = f.opened, first_click_at = f.clicked
                FROM (SELECT sending_log_id, min(at) AS opened, min(at) FILTER (WHERE kind = 'click') AS clicked
                      FROM tracking_trackinglog WHERE delivery_id = %s AND NOT is_machine GROUP BY sending_log_id) f
                WHERE s.id = f.sending_log_id
                """,
                [d.pk],
            )
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE deliveries_sendinglog")
        cur.execute("VACUUM ANALYZE tracking_trackinglog")
    return d.pk


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def summary(name: str, ms: list[float], target: float | None = None) -> None:
    ms_sorted = sorted(ms)
    p95 = ms_sorted[max(0, round(len(ms_sorted) * 0.95) - 1)]
    verdict = "" if target is None else ("  OK" if statistics.median(ms) < target else f"  OVER the {target:.0f} ms target")
    print(f"{name:<42} median {statistics.median(ms):8.1f} ms   best {ms_sorted[0]:8.1f} ms   p95 {p95:8.1f} ms{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=int, default=1_000_000)
    parser.add_argument("--tracking", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--other-logs", type=int, default=2_000_000,
        help="sending logs of another message in the same table (a table holding one message only is read whole)",
    )
    parser.add_argument("--fresh", action="store_true", help="delete and rebuild the benchmark delivery")
    parser.add_argument("--no-csv", action="store_true")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from accounts import roles
    from accounts.setup import install_roles
    from deliveries.models import Delivery
    from kpis.services import kpis_compute

    if connection.vendor != "postgresql":
        sys.exit("Run this on PostgreSQL: DATABASE_URL=postgres://postgres@127.0.0.1:5432/dispatch_bench")
    settings.ALLOWED_HOSTS = ["*"]
    settings.DEBUG = False
    call_command("migrate", verbosity=0)
    from django.apps import apps

    install_roles(apps)

    other = Delivery.objects.filter(label=f"bench-kpis-other-{args.other_logs}").first()
    if other is None and args.other_logs:
        t = time.perf_counter()
        other = Delivery.objects.get(pk=build(f"bench-kpis-other-{args.other_logs}", args.other_logs, 0))
        print(f"built DM{other.pk}: {args.other_logs:,} sending logs of other messages in {time.perf_counter() - t:.1f} s")
    label = f"bench-kpis-{args.logs}-{args.tracking}"
    existing = Delivery.objects.filter(label=label).first()
    if existing and args.fresh:
        existing.delete()
        existing = None
    if existing is None:
        t = time.perf_counter()
        pk = build(label, args.logs, args.tracking)
        print(f"built DM{pk}: {args.logs:,} sending logs + {args.tracking:,} tracking logs in {time.perf_counter() - t:.1f} s")
    else:
        pk = existing.pk
        print(f"reusing DM{pk} ({label}); --fresh rebuilds it")

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user, _ = get_user_model().objects.get_or_create(username="bench-ops", defaults={"first_name": "Bench"})
    user.groups.set([Group.objects.get(name=roles.DELIVERY_SUPERVISORS)])
    token, _ = Token.objects.get_or_create(user=user)

    print(f"PostgreSQL {connection.pg_version}, {args.runs} runs each, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    kpis_compute(delivery_id=pk)  # warm the cache the way the hourly job keeps it warm

    def bare_group_by():
        with connection.cursor() as cur:
            cur.execute("SELECT status, count(*) FROM deliveries_sendinglog WHERE delivery_id = %s GROUP BY status", [pk])
            cur.fetchall()

    bare, ours = [], []
    for _ in range(args.runs):  # interleaved, so both see the same load
        bare += timed(bare_group_by, 1)
        ours += timed(lambda: kpis_compute(delivery_id=pk), 1)
    summary("bare GROUP BY status of the same logs", bare)
    summary("kpis_compute (recompute, 2 queries + write)", ours, 500)
    print(f"    ratio of medians {statistics.median(ours) / statistics.median(bare):.2f}x (target: within 2x); load average {os.getloadavg()[0]:.2f}")
    snap = kpis_compute(delivery_id=pk)
    print(
        f"    to deliver {snap.to_deliver:,}, delivered {snap.delivered:,}, bounces {snap.bounces:,}, "
        f"unique opens {snap.unique_opens:,}, unique clicks {snap.unique_clicks:,}, stored duration {snap.duration_ms} ms"
    )

    with connection.cursor() as cur:  # a send in full swing: ~8,000 status changes during the last minute
        cur.execute(
            "UPDATE deliveries_sendinglog SET event_at = now() - random() * interval '55 seconds' "
            "WHERE id IN (SELECT id FROM deliveries_sendinglog WHERE delivery_id = %s AND status = 'sent' "
            "ORDER BY id DESC LIMIT 8000)",
            [pk],
        )
        cur.execute("VACUUM ANALYZE deliveries_sendinglog")
    api = Client(HTTP_AUTHORIZATION=f"Token {token.key}")
    url = f"/api/deliveries/{pk}/progress/"
    assert api.get(url).status_code == 200
    summary("GET /api/deliveries/<id>/progress/", timed(lambda: api.get(url), args.runs * 5), 20)
    print(f"    {api.get(url).json()}")
    page = Client()
    page.force_login(user)
    block = f"/deliveries/{pk}/kpis/"
    assert page.get(block).status_code == 200
    summary("GET /deliveries/<id>/kpis/ (Deployment block)", timed(lambda: page.get(block), args.runs * 5), 20)

    path = f"/deliveries/{pk}/deployment/?tab=sending&status=failed"
    assert page.get(path).status_code == 200
    summary("GET Deployment window, Sending logs tab", timed(lambda: page.get(path), args.runs))

    from kpis.models import KpiSnapshot
    from kpis.services import kpis_charts_store

    charts = f"/deliveries/{pk}/deployment/charts/"
    t = time.perf_counter()
    kpis_charts_store(delivery_id=pk)  # what the worker does right after each recompute
    print(f"worker: chart rows read from the logs and stored with the figures in {(time.perf_counter() - t) * 1000:.0f} ms")
    assert b"As of the figures computed at" in page.get(charts).content
    summary("GET Deployment window charts (SVG, stored rows)", timed(lambda: page.get(charts), args.runs * 3), 100)
    KpiSnapshot.objects.filter(delivery_id=pk).update(charts=None)  # as before any recompute stored them
    summary("GET Deployment window charts (SVG, read from the logs)", timed(lambda: page.get(charts), args.runs))
    kpis_charts_store(delivery_id=pk)
    print(f"load average {os.getloadavg()[0]:.2f}")

    if not args.no_csv:
        before = rss_mb()
        t = time.perf_counter()
        response = page.get(f"/deliveries/{pk}/deployment/sending.csv")
        size = lines = 0
        for chunk in response.streaming_content:
            size += len(chunk)
            lines += chunk.count(b"\n")
        elapsed = time.perf_counter() - t
        print(
            f"CSV export of sending logs: {lines - 1:,} rows, {size / 1e6:.0f} MB in {elapsed:.1f} s "
            f"({(lines - 1) / elapsed:,.0f} rows/s); peak RSS {before:.0f} MB before, {rss_mb():.0f} MB after"
        )


if __name__ == "__main__":
    main()
