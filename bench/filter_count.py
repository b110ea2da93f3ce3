"""Benchmark: count filter audiences over 1,000,000 profiles (issue 3: each count < 1 s).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dispatch_bench \\
        .venv/bin/python bench/filter_count.py --profiles 1000000

Tops the profiles table up to `--profiles` rows with one server-side INSERT … SELECT
generate_series (varied languages, time zones, names and attributes), ANALYZEs it, then times
`audience_count` (the selector preparation uses) for several filters: the first run and the best
of five.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

FILTERS = {
    "language equals fr": {"op": "and", "conditions": [{"field": "language", "operator": "equals", "value": "fr"}]},
    "tier equals gold (attribute)": {"op": "and", "conditions": [
        {"field": "attributes__tier", "operator": "equals", "value": "gold"}]},
    "fr or de, and tier in gold/silver, and Europe/* time zone in a list": {"op": "and", "conditions": [
        {"field": "language", "operator": "in", "value": ["fr", "de"]},
        {"field": "attributes__tier", "operator": "in", "value": ["gold", "silver"]},
        {"field": "time_zone", "operator": "in", "value": ["Europe/Paris", "Europe/Berlin", "Europe/London"]},
    ]},
    "(last name contains 'art' or email contains 'example7') and signed up before 2020-01-01": {"op": "and", "conditions": [
        {"op": "or", "conditions": [
            {"field": "last_name", "operator": "contains", "value": "art"},
            {"field": "email", "operator": "contains", "value": "example7"},
        ]},
        {"field": "attributes__signup_date", "operator": "before", "value": "2020-01-01"},
    ]},
    "not fr, phone not empty, created after 2020-01-01": {"op": "and", "conditions": [
        {"field": "language", "operator": "not_equals", "value": "fr"},
        {"field": "phone", "operator": "is_not_empty"},
        {"field": "created_at", "operator": "after", "value": "2020-01-01"},
    ]},
    "email equals one address": {"op": "and", "conditions": [
        {"field": "email", "operator": "equals", "value": "USER4242@Example71.com"}]},
}

TOP_UP = """
INSERT INTO audiences_profile (email, email_key, phone, first_name, last_name, language, time_zone, attributes,
                               email_denylisted, sms_denylisted, created_at, updated_at)
SELECT 'gen' || g || '@example' || (g %% 97) || '.com', 'gen' || g || '@example' || (g %% 97) || '.com',
       CASE WHEN g %% 3 = 0 THEN '+3361' || lpad((g %% 10000000)::text, 7, '0') ELSE '' END,
       (ARRAY['Ann','Bob','Chloé','David','Emma','Farid','Greta','Hugo'])[1 + g %% 8],
       (ARRAY['Martin','Bernard','Dubois','Smith','García','Müller','Rossi','Tanaka','Stewart'])[1 + g %% 9],
       (ARRAY['fr','en','en-GB','de','es','it','ja','pt-BR'])[1 + g %% 8],
       (ARRAY['Europe/Paris','Europe/London','America/New_York','Asia/Tokyo','Europe/Berlin','America/Sao_Paulo'])[1 + g %% 6],
       jsonb_strip_nulls(jsonb_build_object(
         'tier', (ARRAY['gold','silver','bronze', NULL])[1 + g %% 4],
         'signup_date', to_char(date '2012-01-01' + (g %% 5000), 'YYYY-MM-DD'))),
       false, false, now() - (g %% 3000) * interval '1 day', now()
FROM generate_series(1, %s) AS g
ON CONFLICT (email_key) DO NOTHING
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from audiences.models import Audience, Profile
    from audiences.selectors import audience_count

    call_command("migrate", verbosity=0)
    have = Profile.objects.count()
    if have < args.profiles:
        t = time.perf_counter()
        with connection.cursor() as c:
            c.execute(TOP_UP, [args.profiles - have])
        print(f"added {args.profiles - have:,} profiles in {time.perf_counter() - t:.1f}s")
    with connection.cursor() as c:
        c.execute("ANALYZE audiences_profile")
    total = Profile.objects.count()
    print(f"database: {connection.vendor} {settings.DATABASES['default']['NAME']}, {total:,} profiles")
    worst = 0.0
    for label, conditions in FILTERS.items():
        audience = Audience(name=label, kind=Audience.Kind.FILTER, conditions=conditions)
        times, count = [], None
        for _ in range(6):
            t = time.perf_counter()
            count = audience_count(audience=audience)
            times.append(time.perf_counter() - t)
        worst = max(worst, times[0])
        print(f"{times[0] * 1000:7.0f} ms first, {min(times[1:]) * 1000:7.0f} ms best of 5 — {count:>9,} — {label}")
    print(f"slowest first count: {worst * 1000:.0f} ms (target < 1000 ms)")


if __name__ == "__main__":
    main()
