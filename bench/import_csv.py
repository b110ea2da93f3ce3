"""Benchmark: import a large CSV into PostgreSQL (issue 3: >= 20,000 rows/s, worker peak < 300 MB).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dispatch_bench \\
        .venv/bin/python bench/import_csv.py --rows 1000000

Generates `var/bench/profiles-<rows>.csv` once (email, names, phone, language, time zone and two
attribute columns; ~1% invalid rows, ~1% duplicates), migrates the database, then runs the import
task in this process (the way a worker runs it) and prints rows/s and this process's peak RSS.
`--again` imports the same file a second time (idempotence: nothing created or updated).
"""

import argparse
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

FIRST = ["Ann", "Bob", "Chloé", "David", "Emma", "Farid", "Greta", "Hugo", "Inès", "Jonas", "Kenji", "Léa", "Mateo", "Nora"]
LAST = ["Martin", "Bernard", "Dubois", "Smith", "García", "Müller", "Rossi", "Tanaka", "Nowak", "Silva", "Kim", "Olsen"]
LANGS = ["fr", "en", "en-GB", "de", "es", "it", "ja", "pt-BR"]
ZONES = ["Europe/Paris", "Europe/London", "America/New_York", "Asia/Tokyo", "Europe/Berlin", "America/Sao_Paulo"]
TIERS = ["gold", "silver", "bronze", ""]


def generate(path: Path, rows: int) -> None:
    rnd = random.Random(42)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("email,first_name,last_name,phone,language,time_zone,tier,signup_date\n")
        for i in range(rows):
            n = i if rnd.random() > 0.01 else max(0, i - 1)  # ~1% duplicates of the previous row
            email = f"user{n}@example{n % 97}.com" if rnd.random() > 0.01 else f"broken{i}.example.com"
            f.write(
                f"{email},{rnd.choice(FIRST)},{rnd.choice(LAST)},+336{n % 100000000:08d},{rnd.choice(LANGS)},"
                f"{rnd.choice(ZONES)},{rnd.choice(TIERS)},20{rnd.randint(10, 25)}-0{rnd.randint(1, 9)}-1{rnd.randint(0, 9)}\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the imported profiles (default: delete them first)")
    parser.add_argument("--again", action="store_true", help="import the same file a second time")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (each: the bare COPY, then the import)")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.files import File
    from django.core.management import call_command
    from django.db import connection

    from accounts.setup import install_roles  # noqa: F401  (roles exist after migrate)
    from audiences.models import ImportJob, Profile
    from audiences.tasks import import_run

    call_command("migrate", verbosity=0)
    path = Path(settings.VAR_DIR) / "bench" / f"profiles-{args.rows}.csv"
    if not path.exists():
        t = time.perf_counter()
        generate(path, args.rows)
        print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f}s")
    if not args.keep:
        with connection.cursor() as c:
            c.execute("TRUNCATE audiences_profile, audiences_audiencemember, audiences_importrejection CASCADE")

    print(f"database: {connection.vendor} {settings.DATABASES['default']['NAME']}, {os.cpu_count()} CPUs")
    with connection.cursor() as c:
        c.execute("DROP TABLE IF EXISTS bench_bare_copy")
        c.execute("CREATE TABLE bench_bare_copy (" + ", ".join(f"c{i} text" for i in range(8)) + ")")

    def bare_copy() -> float:
        """PostgreSQL's own CSV reader: COPY … FROM STDIN of the same file into an unindexed table."""
        with connection.cursor() as c:
            c.execute("TRUNCATE bench_bare_copy")
        t = time.perf_counter()
        with connection.cursor() as c, path.open("rb") as f, c.cursor.copy("COPY bench_bare_copy FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
            while data := f.read(1 << 20):
                copy.write(data)
        return time.perf_counter() - t

    results: dict[str, list[float]] = {}
    for rnd in range(1, args.rounds + 1):
        if not args.keep:
            with connection.cursor() as c:
                c.execute("TRUNCATE audiences_profile, audiences_audiencemember, audiences_importrejection CASCADE")
                c.execute("CHECKPOINT")
        load = os.getloadavg()[0]
        bare = bare_copy()
        results.setdefault("bare COPY of the file (unindexed table)", []).append(bare)
        print(f"round {rnd}: bare COPY {bare:.2f} s ({args.rows / bare:,.0f} rows/s)  [load {load:.2f}]")
        for run in range(2 if args.again else 1):
            with path.open("rb") as f:
                job = ImportJob(file_name=path.name, size=path.stat().st_size)
                job.file.save(path.name, File(f), save=False)
                job.save()
            load = os.getloadavg()[0]
            t = time.perf_counter()
            import_run.apply(args=[job.pk])  # the task, run here as a worker would
            elapsed = time.perf_counter() - t
            job.refresh_from_db()
            name = "Dispatch import, first" if run == 0 else "Dispatch import, same file again"
            results.setdefault(name, []).append(elapsed)
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"round {rnd}: {name}: {job.get_status_display()} — {job.rows_read:,} rows in {elapsed:.2f} s = "
                f"{job.rows_read / elapsed:,.0f} rows/s ({elapsed / bare:.1f}x the bare COPY); created {job.created_count:,}, "
                f"updated {job.updated_count:,}, merged {job.merged_count:,}, unchanged {job.unchanged_count:,}, "
                f"rejected {job.rejected_count:,}; peak RSS of this process {peak_mb:.0f} MB  [load {load:.2f}]"
            )
    print(f"profiles in the database: {Profile.objects.count():,}; load average now {os.getloadavg()[0]:.2f}")
    reference = statistics.median(results["bare COPY of the file (unindexed table)"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"  {name:<45} median {median:6.2f} s  {args.rows / median:>9,.0f} rows/s  {median / reference:5.1f}x  "
              f"(rounds: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
