"""django-post-office against the same relay and the same messages, in its own virtualenv.

    make bench-postoffice                                   # bench/.venv-postoffice (once)
    bench/.venv-postoffice/bin/python bench/postoffice/run.py --messages var/bench/messages.jsonl --port 2526

Run by `bench/deliveries.py send --peers postoffice` in the same run as Dispatch. The messages
(recipient, subject, HTML, text) are the ones Dispatch sends, rendered by Dispatch beforehand; they
are queued with post-office's `send_many` (not timed), then `send_queued_mail_until_done()` (what
`manage.py send_queued_mail` runs) sends them with post-office's defaults: one process, 5 threads,
batches of 100. Prints one JSON line: messages, seconds, messages/s, CPU seconds.
"""

import argparse
import json
import os
import resource
import time

import django
from django.conf import settings


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--database", default=os.environ.get("BENCH_PO_DATABASE", "dispatch_bench_postoffice"))
    args = parser.parse_args()
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes", "post_office"],
        DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": args.database, "USER": "postgres",
                               "HOST": "127.0.0.1", "PORT": "5432"}},  # fmt: skip
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=args.port,
        POST_OFFICE={},  # its defaults
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
        LOGGING_CONFIG=None,
    )
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [args.database]).fetchone():
            conn.execute(f'CREATE DATABASE "{args.database}"')
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from post_office import mail
    from post_office.models import Email

    Email.objects.all().delete()
    with open(args.messages) as f:
        messages = [json.loads(line) for line in f]
    mail.send_many(
        [{"sender": m["from"], "recipients": [m["to"]], "subject": m["subject"], "message": m["text"],
          "html_message": m["html"], "headers": m["headers"]} for m in messages]  # fmt: skip
    )
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    mail.send_queued_mail_until_done(lockfile="/tmp/dispatch-bench-postoffice", processes=args.processes)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    sent = Email.objects.filter(status=0).count()  # STATUS.sent
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime + children.ru_utime + children.ru_stime
    print(json.dumps({"messages": len(messages), "sent": sent, "seconds": seconds, "rate": sent / seconds, "cpu": cpu,
                      "rss_mb": cpu1.ru_maxrss / 1024}))  # fmt: skip


if __name__ == "__main__":
    main()
