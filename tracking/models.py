from django.db import models
from django.utils.translation import gettext_lazy as _

from deliveries.models import Delivery, SendingLog, TrackedUrl


class TrackingLog(models.Model):
    """What a recipient (or a machine acting for them) did with a message."""

    class Kind(models.TextChoices):
        OPEN = "open", _("Open")
        CLICK = "click", _("Email click")
        MIRROR = "mirror", _("Mirror page")
        OPTOUT = "optout", _("Opt-out")

    # Every hit maintains each index of this table, the busiest one: no single-column indexes, only
    # the composite ones below (leading with the columns looked up).
    at = models.DateTimeField()
    # The sending log's message, copied for the per-message indexes. No database constraint: the
    # sending log's foreign key already ties the row to its message (one check per hit, not two);
    # deleting a message still deletes its tracking logs (Django's CASCADE).
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="tracking_logs", db_index=False, db_constraint=False)
    sending_log = models.ForeignKey(SendingLog, on_delete=models.CASCADE, related_name="tracking_logs", db_index=False)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    tracked_url = models.ForeignKey(TrackedUrl, null=True, blank=True, on_delete=models.SET_NULL, related_name="tracking_logs", db_index=False)
    user_agent = models.CharField(max_length=500, blank=True, default="")
    ip_hash = models.CharField(max_length=64, blank=True, default="")
    is_machine = models.BooleanField(default=False)
    machine_reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # Per message and kind (the KPIs' opt-outs and mirror pages count distinct sending logs
            # from it alone, the Tracking logs tab's filters).
            models.Index(fields=["delivery", "kind", "is_machine"], include=["sending_log"], name="tracking_log_kind"),
            models.Index(fields=["sending_log", "kind", "at"]),  # history, first times, the burst rule
            models.Index(fields=["delivery", "at"]),
            # Clicks per link; opens (most rows) have no link and stay out of it.
            models.Index(fields=["tracked_url"], condition=models.Q(tracked_url__isnull=False), name="tracking_log_url_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind} {self.sending_log_id}"


class ProviderEvent(models.Model):
    """An email service provider's event (django-anymail), kept once: a repeat changes nothing.

    `key` is the provider's event id, or "<log>:<type>:<time>" when the provider sends none.
    """

    esp = models.CharField(max_length=40)
    key = models.CharField(max_length=255)
    event_type = models.CharField(max_length=20)
    at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    sending_log = models.ForeignKey(SendingLog, null=True, blank=True, on_delete=models.SET_NULL, related_name="provider_events")
    recipient = models.CharField(max_length=254, blank=True, default="")
    description = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-at", "-id"]
        constraints = [models.UniqueConstraint(fields=["esp", "key"], name="provider_event_esp_key_unique")]
        indexes = [models.Index(fields=["sending_log", "event_type"])]

    def __str__(self) -> str:
        return f"{self.esp} {self.event_type} {self.key}"
