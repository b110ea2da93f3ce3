"""Benchmark: preparing a message to a million recipients, beside PostgreSQL writing the same rows.

    createdb -h 127.0.0.1 -U postgres dispatch_bench_prepare
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dispatch_bench_prepare \\
        .venv/bin/python bench/prepare.py --recipients 1000000 --rounds 3

Target (issue 17): under 10 s for 1,000,000 recipients, within 2x an INSERT … SELECT of the same
rows into the sending-log table with its indexes, measured in the same run.

Builds once (reused by later runs) an audience of --recipients profiles with what preparation
meets in real lists: 0.2% on the profile's denylist, 0.1% quarantined, 0.1% with an invalid
address, 0.1% with a non-ASCII address (judged in Python), 0.1% excluded by domain, and 1,000
profiles without an email_key repeating another's address (duplicates). Then, in each round and in
this order, with the sending-log tables emptied (TRUNCATE) before each measure:

- bare, real table: `INSERT INTO deliveries_sendinglog … SELECT` of every member of the audience
  (profile id, address), committed: the table's 7 indexes and its 2 foreign keys (checked at commit);
- bare, same indexes, no foreign keys: the same INSERT … SELECT into a copy of the table made
  with `LIKE … INCLUDING ALL` (its indexes, not its foreign keys);
- bare, no index: into a copy without indexes;
- Dispatch: `delivery_prepare_run` of the bench's 7 KB personalized message (the one
  bench/deliveries.py sends), end to end: exclusions, personalization check, logs, journal.

Prints the load average before each measure and the process's peak RSS at the end.
"""

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dispatch_bench_prepare")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

PARAGRAPH = (
    "<p>Dear {{ first_name|default('customer') }}, this season brings new arrivals chosen for "
    "{{ attributes.city|default('your city') }}. Our team selected fabrics, colours and cuts that "
    "last, at prices that stay fair. Members of the {{ attributes.plan|default('basic') }} plan get "
    "early access and free returns for thirty days.</p>\n"
)


def html_7kb() -> str:
    """The message of bench/deliveries.py (≈7 KB of HTML, 6 links, 3 personalized fields)."""
    links = "".join(f'<li><a href="https://shop.example.com/c/{i}?utm=bench">Collection {i}</a></li>' for i in range(6))
    return (
        "<html><body><h1>Hello {{ first_name }} {{ last_name }}</h1>" + PARAGRAPH * 11 + f"<ul>{links}</ul>"
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · <a href="{{ mirror_url }}">View online</a></p></body></html>'
    )


def load() -> str:
    one, five, _fifteen = os.getloadavg()
    return f"load {one:.2f} (5 min {five:.2f})"


def ensure_audience(n: int):
    from django.db import connection, transaction

    from audiences.models import Audience, Quarantine

    name = f"bench-prepare-{n}"
    audience = Audience.objects.filter(name=name).first()
    if audience:
        return audience
    t = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        audience = Audience.objects.create(name=name, kind=Audience.Kind.LIST)
        tag = f"{time.time_ns()}"
        cur.execute(
            """INSERT INTO audiences_profile (email, email_key, phone, first_name, last_name, language, time_zone,
                   attributes, email_denylisted, sms_denylisted, created_at, updated_at)
               SELECT e, lower(e), '', 'First' || g, CASE WHEN g %% 7 = 0 THEN '' ELSE 'Last' || g END, 'en', 'Europe/Paris',
                      jsonb_build_object('plan', CASE WHEN g %% 3 = 0 THEN 'gold' ELSE 'basic' END, 'city', 'City' || (g %% 50)),
                      g %% 500 = 0, false, now(), now()
               FROM (SELECT g, CASE WHEN g %% 1000 = 1 THEN 'broken' || g || '.' || %s || '.example.com'
                                    WHEN g %% 1000 = 2 THEN 'ünï' || g || '.' || %s || '@bench.example.com'
                                    WHEN g %% 1000 = 3 THEN 'b' || %s || '.' || g || '@blocked.example'
                                    ELSE 'b' || %s || '.' || g || '@bench.example.com' END AS e
                     FROM generate_series(1, %s) g) x""",
            [tag, tag, tag, tag, n - 1000],
        )
        # 1,000 profiles written around the services (no email_key) repeating an address in another case.
        cur.execute(
            """INSERT INTO audiences_profile (email, email_key, phone, first_name, last_name, language, time_zone,
                   attributes, email_denylisted, sms_denylisted, created_at, updated_at)
               SELECT upper(email), NULL, '', first_name, last_name, language, time_zone, attributes, false, false, now(), now()
               FROM audiences_profile WHERE email_key LIKE %s AND email_key LIKE '%%@bench.example.com' ORDER BY id LIMIT 1000""",
            [f"b{tag}.%"],
        )
        cur.execute(
            """INSERT INTO audiences_quarantine (address, channel, status, error_count, reason, text, created_at, updated_at)
               SELECT email_key, 'email', %s, 1, '', '', now(), now() FROM audiences_profile
               WHERE email_key LIKE %s AND id %% 1000 = 250""",  # not among the denylisted (every 500th)
            [Quarantine.Status.QUARANTINE, f"b{tag}.%"],
        )
        cur.execute(
            """INSERT INTO audiences_audiencemember (audience_id, profile_id, added_at)
               SELECT %s, id, now() FROM audiences_profile WHERE email_key LIKE %s OR email_key LIKE %s
                   OR (email_key IS NULL AND lower(email) LIKE %s) OR email LIKE %s""",
            [audience.pk, f"b{tag}.%", f"ünï%.{tag}@%", f"b{tag}.%", f"broken%.{tag}.%"],
        )
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE audiences_profile")
        cur.execute("VACUUM ANALYZE audiences_audiencemember")
    print(f"built audience {audience.pk} ({n:,} profiles) in {time.perf_counter() - t:.1f} s")
    return audience


def empty_logs() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("TRUNCATE deliveries_sendinglog, deliveries_exclusionlog, bench_log_indexed, bench_log_plain CASCADE")
        cur.execute("CHECKPOINT")  # each measure starts without the last one's dirty pages to write


def timed_sql(sql: str, params: list) -> float:
    from django.db import connection, transaction

    t = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(sql, params)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from accounts.roles import STANDARD_USERS
    from deliveries.models import Delivery, State
    from deliveries.services import delivery_create, delivery_prepare_run

    if connection.vendor != "postgresql":
        sys.exit("Run this on PostgreSQL (DATABASE_URL=postgres://…).")
    call_command("migrate", verbosity=0)
    settings.EXCLUDED_DOMAINS = ["blocked.example"]
    audience = ensure_audience(args.recipients)
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_log_indexed (LIKE deliveries_sendinglog INCLUDING ALL)")
        cur.execute("CREATE TABLE IF NOT EXISTS bench_log_plain (LIKE deliveries_sendinglog INCLUDING DEFAULTS INCLUDING IDENTITY)")
        cur.execute("SELECT count(*) FROM audiences_audiencemember WHERE audience_id = %s", [audience.pk])
        members = cur.fetchone()[0]

    from django.contrib.auth.models import Group

    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"first_name": "Bench"})
    user.groups.add(Group.objects.get(name=STANDARD_USERS))
    bare, _ = Delivery.objects.get_or_create(label="bench bare insert")
    columns = "delivery_id, profile_id, address, status, failure_type, failure_reason, failure_text, attempts, message_id"
    select = (
        "SELECT %s, p.id, p.email, 'pending', '', '', '', 0, '' FROM audiences_profile p "
        "JOIN audiences_audiencemember m ON m.profile_id = p.id WHERE m.audience_id = %s"
    )
    print(f"PostgreSQL {connection.pg_version}, {os.cpu_count()} CPUs, {members:,} members in the audience")
    results: dict[str, list[float]] = {}
    for rnd in range(1, args.rounds + 1):
        for name, table in (
            ("bare INSERT … SELECT, sending-log table (7 indexes, 2 foreign keys)", "deliveries_sendinglog"),
            ("bare INSERT … SELECT, same indexes, no foreign key", "bench_log_indexed"),
            ("bare INSERT … SELECT, no index", "bench_log_plain"),
        ):
            empty_logs()
            before = load()
            seconds = timed_sql(f"INSERT INTO {table} ({columns}) {select}", [bare.pk, audience.pk])
            results.setdefault(name, []).append(seconds)
            print(f"round {rnd}: {name}: {seconds:.2f} s  [{before}]")
        empty_logs()
        d = delivery_create(
            user=user,
            data={"label": "bench prepare", "sender_name": "Bench Shop", "sender_address": "news@shop.example.com",
                  "subject": "{{ first_name }}, new arrivals for {{ attributes.city }}", "html": html_7kb(), "audience": audience},  # fmt: skip
        )
        Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
        before = load()
        t = time.perf_counter()
        delivery_prepare_run(delivery_id=d.pk)
        seconds = time.perf_counter() - t
        d.refresh_from_db()
        name = "Dispatch: delivery_prepare_run"
        results.setdefault(name, []).append(seconds)
        print(
            f"round {rnd}: {name}: {seconds:.2f} s ({d.targeted_count / seconds:,.0f} recipients/s), state {d.state}, "
            f"targeted {d.targeted_count:,}, to deliver {d.to_deliver_count:,}  [{before}]"
        )
        for line in d.journal.order_by("id").values_list("text", flat=True):
            if rnd == 1 and ("excluded" in line or "missing" in line or "Analysis" in line):
                print(f"    journal: {line}")
        empty_logs()
        d.delete()
    print(f"\nmedian of {args.rounds} rounds ({load()}); peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    reference = statistics.median(results["bare INSERT … SELECT, sending-log table (7 indexes, 2 foreign keys)"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"  {name:<70} {median:6.2f} s   {median / reference:4.2f}x   (rounds: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
