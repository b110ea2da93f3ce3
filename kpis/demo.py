"""Demo data: KPI snapshots for the demo messages already sent by this run (`command.demo_deliveries`;
never a user's own messages; idempotent, a few queries each)."""

from deliveries.models import STARTED_STATES, Delivery

from .services import kpis_charts_store, kpis_compute


def seed(command) -> None:
    demo = getattr(command, "demo_deliveries", None) or []
    ids = Delivery.objects.filter(pk__in=demo, state__in=STARTED_STATES).values_list("pk", flat=True)
    for delivery_id in sorted(ids):
        kpis_compute(delivery_id=delivery_id)
        kpis_charts_store(delivery_id=delivery_id)
