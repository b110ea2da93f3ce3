"""Demo data for the deployment dashboard: the hourly counter for the demo sends already done (rebuilt
from their sending logs, as the minute job would have kept it), and the alerts their figures call
for (stored without email: seeding mails nobody). Only the messages the demo made in this run
(`command.demo_deliveries`): a user's own sends and alerts are left alone. Idempotent and quick."""

from django.utils import timezone

from deliveries.models import STARTED_STATES, Delivery

from .models import Alert, ProcessedHour
from .services import alerts_check, processed_hours_backfill


def seed(command) -> None:
    demo = getattr(command, "demo_deliveries", None) or []
    have = ProcessedHour.objects.values("delivery_id")
    missing = list(Delivery.objects.filter(pk__in=demo, state__in=STARTED_STATES).exclude(pk__in=have).values_list("pk", flat=True))
    rows = processed_hours_backfill(delivery_ids=missing) if missing else 0
    raised = alerts_check(notify=False, delivery_ids=demo) if demo else []
    Alert.objects.filter(pk__in=[a.pk for a in raised]).update(emailed_at=timezone.now())
    command.stdout.write(f"ops demo: {rows} hourly row(s), {len(raised)} alert(s)")
