"""Demo data: KPI snapshots for every demo message already sent (idempotent, a few queries each)."""

from deliveries.models import STARTED_STATES, Delivery

from .services import kpis_compute


def seed(command) -> None:
    ids = list(
        Delivery.objects.filter(state__in=STARTED_STATES, kpis__computed_at__isnull=True).values_list("pk", flat=True)
    )
    ids += list(Delivery.objects.filter(state__in=STARTED_STATES, kpis__isnull=True).values_list("pk", flat=True))
    for delivery_id in sorted(set(ids)):
        kpis_compute(delivery_id=delivery_id)
