from django.db import models

from deliveries.models import Delivery


class KpiSnapshot(models.Model):
    """The KPIs of one delivery (DOMAIN.md §4), computed from the logs with set-based aggregates."""

    delivery = models.OneToOneField(Delivery, on_delete=models.CASCADE, related_name="kpis", primary_key=True)
    to_deliver = models.PositiveIntegerField(default=0)
    delivered = models.PositiveIntegerField(default=0)
    bounces = models.PositiveIntegerField(default=0)  # bounces + errors: count(status = failed)
    hard_bounces = models.PositiveIntegerField(default=0)
    soft_bounces = models.PositiveIntegerField(default=0)
    unknown = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)
    pending = models.PositiveIntegerField(default=0)
    unique_opens = models.PositiveIntegerField(default=0)
    unique_clicks = models.PositiveIntegerField(default=0)
    opt_outs = models.PositiveIntegerField(default=0)
    mirror_pages = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    @property
    def sent(self) -> int:
        """Sent (processed) = delivered + bounces."""
        return self.delivered + self.bounces
