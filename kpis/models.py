from django.conf import settings
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
    skipped = models.PositiveIntegerField(default=0)  # left since preparation: not sent, apart from to_deliver
    pending = models.PositiveIntegerField(default=0)
    unique_opens = models.PositiveIntegerField(default=0)
    unique_clicks = models.PositiveIntegerField(default=0)
    opt_outs = models.PositiveIntegerField(default=0)
    mirror_pages = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    # The Deployment window's chart rows (buckets and counts, a few hundred at most), computed by the
    # worker right after the figures, as of `charts_as_of` (the `computed_at` they go with): the
    # window draws them without reading a million logs.
    charts = models.JSONField(null=True, blank=True)
    charts_as_of = models.DateTimeField(null=True, blank=True)
    # The recompute lock: set by one conditional UPDATE when a recompute is enqueued, cleared when it
    # ends; a value older than KPI_COMPUTE_LOCK_TIMEOUT counts as free (its task vanished).
    computing_since = models.DateTimeField(null=True, blank=True)
    computing_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"KPIs of DM{self.delivery_id}"

    @property
    def sent(self) -> int:
        """Sent (processed) = delivered + bounces."""
        return self.delivered + self.bounces
