"""Operations: alerts on sends, their thresholds, and an hourly counter of messages processed.

Sits above kpis (accounts <- audiences <- deliveries <- tracking <- kpis <- ops <- api).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from deliveries.models import Delivery


class Criterion(models.TextChoices):
    SEND_FAILED = "send_failed", _("Send failed")
    PREPARATION_FAILED = "preparation_failed", _("Preparation failed")
    BOUNCES = "bounces", _("Bounces + errors above the threshold")
    START_PENDING = "start_pending", _("Start pending too long")
    LOW_THROUGHPUT = "low_throughput", _("Throughput below the threshold")
    AUTOPAUSED = "autopaused", _("Sending paused automatically")


class AlertThresholds(models.Model):
    """The alert thresholds (one row), editable by Administration; defaults from settings."""

    bounce_rate = models.FloatField(
        help_text=_("Alert when bounces + errors reach this share of processed messages (0.05 = 5%).")
    )
    bounce_min_processed = models.PositiveIntegerField(help_text=_("…once at least this many messages were processed."))
    start_pending_minutes = models.PositiveIntegerField(
        help_text=_("Alert when a message is still start pending this many minutes after its start time.")
    )
    min_throughput_per_minute = models.PositiveIntegerField(
        help_text=_(
            "Alert when a send in progress processes fewer messages per minute than this (over the last 10 minutes)."
        )
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name_plural = "alert thresholds"
        constraints = [
            models.CheckConstraint(
                condition=Q(bounce_rate__gt=0) & Q(bounce_rate__lte=1), name="alert_thresholds_rate_range"
            )
        ]


class Alert(models.Model):
    """One alert: stored once per message, criterion and day; acknowledged by a person."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="alerts")
    criterion = models.CharField(max_length=20, choices=Criterion.choices)
    day = models.DateField()  # in settings.TIME_ZONE
    raised_at = models.DateTimeField()
    summary = models.TextField()
    emailed_at = models.DateTimeField(null=True, blank=True)  # claimed by the sender of the notification
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-raised_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["delivery", "criterion", "day"], name="alert_once_per_day")]
        indexes = [
            models.Index(fields=["raised_at"]),
            models.Index(fields=["delivery", "raised_at"]),
            models.Index(fields=["acknowledged_at", "raised_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.get_criterion_display()} on DM{self.delivery_id} ({self.day})"

    @property
    def is_open(self) -> bool:
        return self.acknowledged_at is None


class ProcessedHour(models.Model):
    """Messages processed (delivered + bounces) by one delivery during one hour, sampled every
    minute from the delivery's live counters: the dashboard's chart reads these few rows, never the
    sending logs. `total` is the counter at the last sample, so the next hour's count is the difference."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    processed = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["delivery", "hour"], name="processed_hour_unique")]
        indexes = [models.Index(fields=["hour"])]
