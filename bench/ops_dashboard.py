"""Benchmark: the deployment dashboard with 1,000 messages and 10,000,000 sending logs (issue 7).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dispatch_bench_ops \\
        .venv/bin/python bench/ops_dashboard.py --messages 1000 --logs 10000000

Target: GET /deployments/ renders in under 150 ms of server time.

Migrates the database, then (once; `--fresh` rebuilds) creates the messages with their live
counters and KPI snapshots (bulk_create), inserts their sending logs with set-based statements
(generate_series, about a million rows per statement) spread over the last 30 days, fills the
hourly counter from the logs (`processed_hours_backfill`, one GROUP BY: what the minute job keeps up
to date in production), and VACUUM ANALYZEs. Messages: 5 in progress and 3 paused (with live
rates), 12 start pending, the rest finished (a few failed or stopped), one started every ~43 minutes.

Measures through Django's test client in this process (auth, session, view, selectors, template:
everything but the network), median and p95 over --runs:
- GET /deployments/ (default period: 7 days), with ?period=30d, sorted by open rate, and the live part;
- GET /api/deployments/;
- for comparison, the hourly chart computed from the sending logs instead of the counter table
  (the (delivery, event_at) index over the period's messages).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

LABEL = "bench-ops"


def build(messages: int, logs: int) -> None:
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone

    from deliveries.models import Delivery, State
    from kpis.models import KpiSnapshot
    from ops.services import processed_hours_backfill

    User = get_user_model()
    owners = [
        User.objects.get_or_create(username=f"bench-owner-{i}", defaults={"first_name": f"Owner {i}"})[0]
        for i in range(4)
    ]
    now = timezone.now()
    live, paused, pending = 5, 3, 12
    sent_messages = messages - pending
    per = logs // sent_messages
    rows = []
    for i in range(messages):
        owner = owners[i % len(owners)]
        if i < live + paused:
            started = now - timedelta(minutes=20 + i)
            state = State.IN_PROGRESS if i < live else State.PAUSED
            done = per * 4 // 10
            rows.append(Delivery(label=f"{LABEL} {i}", state=state, started_at=started, to_deliver_count=per,
                                 sent_count=done * 94 // 100, failed_count=done - done * 94 // 100, processed_count=done,
                                 created_by=owner, confirmed_at=started))  # fmt: skip
        elif i < live + paused + pending:
            at = now + timedelta(hours=i)
            rows.append(Delivery(label=f"{LABEL} {i}", state=State.START_PENDING, schedule="at", scheduled_at=at,
                                 to_deliver_count=per, created_by=owner, confirmed_at=now))  # fmt: skip
        else:
            started = now - timedelta(minutes=43 * (i - live - paused - pending + 1))
            state = State.FAILED if i % 97 == 0 else State.STOPPED if i % 89 == 0 else State.FINISHED
            sent = 0 if state == State.FAILED else per * 93 // 100
            rows.append(Delivery(label=f"{LABEL} {i}", state=state, started_at=started, finished_at=started + timedelta(hours=1),
                                 to_deliver_count=per, sent_count=sent, failed_count=per - sent, processed_count=per,
                                 created_by=owner, confirmed_at=started))  # fmt: skip
    with transaction.atomic():
        created = Delivery.objects.bulk_create(rows)
        KpiSnapshot.objects.bulk_create(
            [
                KpiSnapshot(
                    delivery=d,
                    to_deliver=d.to_deliver_count,
                    delivered=d.sent_count,
                    bounces=d.failed_count,
                    unique_opens=d.sent_count * (15 + d.pk % 20) // 100,
                    unique_clicks=d.sent_count * (1 + d.pk % 5) // 100,
                    computed_at=now,
                )  # fmt: skip
                for d in created
                if d.state != State.START_PENDING
            ]
        )
    ids = [d.pk for d in created if d.state != State.START_PENDING]
    step = max(1, 1_000_000 // per)
    t = time.perf_counter()
    for start in range(0, len(ids), step):
        chunk = ids[start : start + step]
        with transaction.atomic(), connection.cursor() as cur:
            # Finished messages: 93% sent, 6% failed, 1% unknown/cancelled over their first hour; messages
            # still sending: 40% done (event times up to now), the rest pending.
            cur.execute(
                """
                INSERT INTO deliveries_sendinglog
                    (delivery_id, address, status, failure_type, failure_reason, failure_text, attempts, event_at, message_id)
                SELECT d.id, 'r' || g || '-' || d.id || '@bench.example.com',
                       CASE WHEN d.state IN ('in_progress', 'paused') AND g > %(per)s * 4 / 10 THEN 'pending'
                            WHEN d.state = 'failed' OR g %% 100 BETWEEN 93 AND 98 THEN 'failed'
                            WHEN g %% 100 = 99 THEN 'unknown' ELSE 'sent' END,
                       CASE WHEN g %% 100 BETWEEN 93 AND 98 THEN 'hard' ELSE '' END,
                       CASE WHEN g %% 100 BETWEEN 93 AND 98 THEN 'user_unknown' ELSE '' END,
                       '', 1,
                       CASE WHEN d.state IN ('in_progress', 'paused') AND g > %(per)s * 4 / 10 THEN NULL
                            WHEN d.state IN ('in_progress', 'paused')
                                THEN d.started_at + (now() - d.started_at) * g / (%(per)s * 4 / 10)
                            ELSE d.started_at + (g * 3600.0 / %(per)s) * interval '1 second' END,
                       ''
                FROM deliveries_delivery d CROSS JOIN generate_series(1, %(per)s) g
                WHERE d.id = ANY(%(ids)s)
                """,
                {"per": per, "ids": chunk},
            )
        done = min(start + step, len(ids))
        print(
            f"  sending logs for {done}/{len(ids)} messages ({done * per:,} rows, {time.perf_counter() - t:.0f} s)",
            flush=True,
        )
    t = time.perf_counter()
    hours = processed_hours_backfill(delivery_ids=ids)
    print(
        f"  hourly counter filled from the logs: {hours:,} rows in {time.perf_counter() - t:.1f} s (one-time backfill)"
    )
    with connection.cursor() as cur:
        for table in ("deliveries_sendinglog", "deliveries_delivery", "kpis_kpisnapshot", "ops_processedhour"):
            cur.execute(f"VACUUM ANALYZE {table}")


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
    verdict = (
        "" if target is None else ("  OK" if statistics.median(ms) < target else f"  OVER the {target:.0f} ms target")
    )
    print(
        f"{name:<52} median {statistics.median(ms):7.1f} ms   best {ms_sorted[0]:7.1f} ms   p95 {p95:7.1f} ms{verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--logs", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--fresh", action="store_true", help="delete and rebuild the benchmark messages")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count
    from django.db.models.functions import Trunc
    from django.test import Client

    from accounts import roles
    from accounts.setup import install_roles
    from deliveries.models import Delivery, SendingLog
    from ops import selectors

    if connection.vendor != "postgresql":
        sys.exit("Run this on PostgreSQL: DATABASE_URL=postgres://postgres@127.0.0.1:5432/dispatch_bench_ops")
    settings.ALLOWED_HOSTS = ["*"]
    settings.DEBUG = False
    call_command("migrate", verbosity=0)
    from django.apps import apps

    install_roles(apps)
    existing = Delivery.objects.filter(label__startswith=LABEL)
    if args.fresh and existing.exists():
        t = time.perf_counter()
        with connection.cursor() as cur:
            cur.execute("TRUNCATE deliveries_sendinglog, ops_processedhour, ops_alert")
        existing.delete()
        print(f"deleted the previous benchmark data in {time.perf_counter() - t:.0f} s")
    if not existing.exists():
        t = time.perf_counter()
        build(args.messages, args.logs)
        print(f"built {args.messages:,} messages and their sending logs in {time.perf_counter() - t:.0f} s")
    with connection.cursor() as cur:
        cur.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = 'deliveries_sendinglog'")
        estimate = cur.fetchone()[0]
    print(
        f"PostgreSQL {connection.pg_version}: {Delivery.objects.count():,} messages, ~{estimate:,} sending logs; {args.runs} runs each"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user, _ = get_user_model().objects.get_or_create(username="bench-ops", defaults={"first_name": "Bench"})
    user.groups.set([Group.objects.get(name=roles.DELIVERY_SUPERVISORS)])
    page = Client()
    page.force_login(user)

    for name, url, extra in (
        ("GET /deployments/ (7 days)", "/deployments/", {}),
        ("GET /deployments/?period=30d", "/deployments/?period=30d", {}),
        ("GET /deployments/?period=30d&sort=-open", "/deployments/?period=30d&sort=-open", {}),
        ("GET /deployments/?part=live (htmx refresh)", "/deployments/?part=live", {"HTTP_HX_REQUEST": "true"}),
        ("GET /api/deployments/", "/api/deployments/", {}),
    ):
        for _ in range(3):  # warm up (connection, template cache)
            response = page.get(url, **extra)
        assert response.status_code == 200, (url, response.status_code)
        queries: list[str] = []

        def record(execute, sql, params, many, context, queries=queries):
            queries.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record):
            page.get(url, **extra)
        cpu_before = time.process_time()
        summary(name, timed(lambda url=url, extra=extra: page.get(url, **extra), args.runs), 150)
        cpu_ms = (time.process_time() - cpu_before) * 1000 / args.runs
        logs = sum("deliveries_sendinglog" in sql for sql in queries)
        print(
            f"    {len(queries)} queries ({logs} on sending logs: the live rates of the sends in progress), "
            f"{len(response.content) / 1024:.0f} KB; this process's CPU {cpu_ms:.1f} ms per request (mean)"
        )

    # The alternative the issue mentions: the chart from the sending logs' (delivery, event_at) index.
    filters = selectors.filters_from({})
    recent = selectors.recent_queryset(filters)

    def chart_from_logs():
        return list(
            SendingLog.objects.filter(event_at__gte=filters.since, delivery__in=recent.order_by().values("pk"))
            .annotate(bucket=Trunc("event_at", "hour"))
            .values_list("bucket")
            .annotate(n=Count("id"))
        )

    summary("chart from the sending logs instead (7 days)", timed(chart_from_logs, 3))
    summary(
        "chart from the hourly counter table (7 days)",
        timed(lambda: selectors.processed_per_hour(recent, since=filters.since), args.runs),
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
