"""Demo messages in several states, so every part of the dashboard can be seen at once.

Idempotent: a message whose label exists is left alone. Runs after the audiences' demo data and
uses only its audiences. The ids of the messages made by this run go to `command.demo_deliveries`:
the demo data of the apps above (tracking, KPIs, alerts) is made for those messages only, never
for a user's own. Every date of the past send (its journal included) is in the past.
"""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db.models import Count
from django.utils import timezone

from audiences.demo import DEMO_AUDIENCES
from audiences.models import Audience

from .models import Delivery, JournalEntry, SendingLog, SendingStatus, State
from .services import FINISHED_TEXT, delivery_create, delivery_prepare_run, journal_add, started_text

HTML = """<html><body style="font-family: sans-serif">
<h1>Hello {{ first_name|default("friend") }},</h1>
<p>{{ intro }}</p>
<p><a href="https://shop.example.com/offers?src=dispatch">See the offers</a> ·
<a href="https://shop.example.com/account">Your account</a></p>
<p style="color:#888;font-size:12px">You receive this email as a customer of Example Shop.
<a href="{{ unsubscribe_url }}">Unsubscribe</a> · <a href="{{ mirror_url }}">View in your browser</a></p>
</body></html>"""

MESSAGES = [
    ("Welcome series — step 1", State.EDITING, "Welcome to Example Shop!"),
    ("Spring sale", State.READY, "Our spring sale starts today: up to 40% off."),
    ("Black Friday teaser", State.START_PENDING, "Black Friday is coming: get ready."),
    ("November newsletter", State.FINISHED, "Here is what happened this month."),
]


def _prepare(d: Delivery) -> None:
    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
    delivery_prepare_run(delivery_id=d.pk)


def _backdate(d: Delivery, *, start, finished) -> None:
    """A past send was written and prepared before it started: its creation, preparation and their
    journal lines are dated in the hour before `start` (not now, days after the send)."""
    written = start - timedelta(hours=1)
    entries = list(JournalEntry.objects.filter(delivery=d).order_by("id"))
    for n, entry in enumerate(entries):
        entry.at = written + timedelta(minutes=30 if n else 0, seconds=n)
    JournalEntry.objects.bulk_update(entries, ["at"])
    Delivery.objects.filter(pk=d.pk).update(created_at=written, prepared_at=written + timedelta(minutes=31), updated_at=finished)


def seed(command) -> None:
    User = get_user_model()
    marketer = User.objects.filter(username="marketer").first()
    by_name = {a.name: a for a in Audience.objects.filter(name__in=DEMO_AUDIENCES).annotate(n=Count("memberships"))}
    audiences = sorted((by_name[n] for n in DEMO_AUDIENCES if n in by_name), key=lambda a: (-a.n, a.pk))
    created = getattr(command, "demo_deliveries", None)
    if created is None:
        created = command.demo_deliveries = []
    if marketer is None or not audiences:
        command.stdout.write("deliveries demo: no marketer or no audience yet, skipped")
        return
    now = timezone.now()
    for i, (label, target, intro) in enumerate(MESSAGES):
        if Delivery.objects.filter(label=label).exists():
            continue
        data = {
            "label": label,
            "sender_name": "Example Shop",
            "sender_address": "news@shop.example.com",
            "reply_to": "care@shop.example.com",
            "subject": "{{ first_name|default('Hello') }}, " + intro.split(":")[0].lower(),
            "html": HTML.replace("{{ intro }}", intro),
            "audience": audiences[i % len(audiences)],
        }
        if target == State.START_PENDING:
            data.update(schedule=Delivery.Schedule.AT, scheduled_at=now + timedelta(days=2), schedule_tz="Europe/Paris")
        d = delivery_create(user=marketer, data=data)
        created.append(d.pk)
        if target == State.EDITING:
            continue
        _prepare(d)
        d.refresh_from_db()
        if d.state != State.READY or target == State.READY:
            continue
        start = now - timedelta(days=3) if target == State.FINISHED else None
        if target == State.START_PENDING:
            Delivery.objects.filter(pk=d.pk).update(state=State.START_PENDING, confirmed_by=marketer, confirmed_at=now)
            journal_add(delivery=d, user=marketer, text=started_text(marketer))
            continue
        # A past send, recorded as the sender would have: most accepted, a few refused.
        logs = SendingLog.objects.filter(delivery=d)
        failed_ids = list(logs.order_by("id").values_list("id", flat=True)[::37])
        logs.exclude(id__in=failed_ids).update(status=SendingStatus.SENT, attempts=1, event_at=start + timedelta(minutes=5))
        logs.filter(id__in=failed_ids).update(
            status=SendingStatus.FAILED, attempts=1, failure_type="hard", failure_reason="user_unknown",
            failure_text="550 5.1.1 User unknown", event_at=start + timedelta(minutes=5),
        )  # fmt: skip
        sent, failed = d.to_deliver_count - len(failed_ids), len(failed_ids)
        Delivery.objects.filter(pk=d.pk).update(
            state=State.FINISHED, confirmed_by=marketer, confirmed_at=start, started_at=start,
            finished_at=start + timedelta(minutes=6), sent_count=sent, failed_count=failed, processed_count=sent + failed,
        )  # fmt: skip
        _backdate(d, start=start, finished=start + timedelta(minutes=6))
        ended = JournalEntry.objects.bulk_create(
            [
                JournalEntry(delivery=d, user=marketer, text=started_text(marketer)),
                JournalEntry(delivery=d, text=FINISHED_TEXT),
            ]
        )
        ended[0].at, ended[1].at = start, start + timedelta(minutes=6)  # auto_now_add set them to now
        JournalEntry.objects.bulk_update(ended, ["at"])
    command.stdout.write(f"deliveries demo: {Delivery.objects.count()} messages")
