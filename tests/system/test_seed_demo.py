"""`seed_demo` (run by every `make run`) makes the demo data once and touches nothing else: not the
user's own messages, profiles or alerts, and nothing at all on a second run. No demo date is in
the future."""

from datetime import timedelta

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import models
from django.utils import timezone

from deliveries.models import Delivery, JournalEntry, SendingLog, SendingStatus, State
from deliveries.services import delivery_create, delivery_prepare_run
from tests.deliveries.conftest import HTML, make_audience, make_profiles

pytestmark = pytest.mark.django_db


def _tables() -> dict[str, list[dict]]:
    """Every row of every table the project owns, in a comparable form."""
    return {
        model._meta.label: list(model.objects.order_by("pk").values())
        for model in apps.get_models()
        if model._meta.app_label not in {"sessions", "admin", "contenttypes"}
    }


def _users_sent_message(user) -> Delivery:
    """A message the user sent themselves a moment ago: 30 messages delivered, nobody opened yet."""
    profiles = make_profiles([f"reader{i}@example.com" for i in range(30)])
    d = delivery_create(
        user=user,
        data={"label": "My own send", "sender_name": "Me", "sender_address": "me@shop.example.com", "subject": "Hi",
              "html": HTML, "audience": make_audience(profiles, name="My readers")},  # fmt: skip
    )
    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
    delivery_prepare_run(delivery_id=d.pk)
    now = timezone.now()
    SendingLog.objects.filter(delivery=d).update(status=SendingStatus.SENT, attempts=1, event_at=now)
    Delivery.objects.filter(pk=d.pk).update(
        state=State.FINISHED, confirmed_by=user, confirmed_at=now, started_at=now, finished_at=now,
        sent_count=30, processed_count=30,
    )  # fmt: skip
    return d


def test_a_second_run_changes_nothing_and_never_tracks_the_users_own_messages(settings):
    call_command("seed_demo", quiet=True)
    from django.contrib.auth import get_user_model

    mine = _users_sent_message(get_user_model().objects.get(username="marketer"))
    before = _tables()

    call_command("seed_demo", quiet=True)  # the next `make run`

    after = _tables()
    changed = [label for label in before if before[label] != after[label]]
    assert changed == []
    from kpis.models import KpiSnapshot
    from ops.models import Alert
    from tracking.models import TrackingLog

    assert not TrackingLog.objects.filter(delivery=mine).exists()
    assert not KpiSnapshot.objects.filter(delivery=mine).exists() and not Alert.objects.filter(delivery=mine).exists()
    assert not SendingLog.objects.filter(delivery=mine, profile__email_denylisted=True).exists()


def test_a_first_run_on_a_database_in_use_leaves_the_users_messages_and_audiences_alone(marketer):
    from kpis.models import KpiSnapshot
    from ops.models import Alert, ProcessedHour
    from tracking.models import TrackingLog

    mine = _users_sent_message(marketer)
    call_command("seed_demo", quiet=True)

    assert TrackingLog.objects.exists()  # the demo's own newsletter has its opens and clicks
    assert not TrackingLog.objects.filter(delivery=mine).exists()
    assert not KpiSnapshot.objects.filter(delivery=mine).exists()
    assert not ProcessedHour.objects.filter(delivery=mine).exists() and not Alert.objects.filter(delivery=mine).exists()
    # the demo messages go to the demo's audiences, not to the user's
    assert not Delivery.objects.exclude(pk=mine.pk).filter(audience__name="My readers").exists()


def test_no_demo_date_is_in_the_future_and_the_past_send_is_journaled_when_it_happened():
    call_command("seed_demo", quiet=True)
    now = timezone.now()
    future = []
    for model in apps.get_models():
        for field in model._meta.get_fields():
            if not isinstance(field, models.DateTimeField) or (model is Delivery and field.name == "scheduled_at"):
                continue
            late = model.objects.filter(**{f"{field.name}__gt": now + timedelta(seconds=1)}).count()
            if late:
                future.append(f"{model._meta.label}.{field.name}: {late}")
    assert future == []

    newsletter = Delivery.objects.get(label="November newsletter", state=State.FINISHED)
    journal = list(JournalEntry.objects.filter(delivery=newsletter).order_by("at", "id"))
    assert newsletter.created_at <= newsletter.prepared_at <= newsletter.started_at < newsletter.finished_at < now - timedelta(days=2)
    assert all(newsletter.created_at <= e.at <= newsletter.finished_at for e in journal), [(e.at, e.text) for e in journal]
    started = next(e for e in journal if e.text.startswith("Delivery started by user"))
    assert started.at == newsletter.started_at
    assert journal[-1].text.startswith("Delivery finished") and journal[-1].at == newsletter.finished_at
