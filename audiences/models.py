from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class Channel(models.TextChoices):
    EMAIL = "email", _("Email")
    SMS = "sms", _("SMS")


class Profile(models.Model):
    """A recipient. `email` keeps the local part as given and the domain lower-cased;
    `email_key` is the whole address lower-cased, unique, for case-insensitive matching."""

    email = models.CharField(max_length=254, blank=True, default="")
    email_key = models.CharField(max_length=254, null=True, blank=True, unique=True, editable=False)
    phone = models.CharField(max_length=20, blank=True, default="", help_text=_("E.164, e.g. +33612345678"))
    first_name = models.CharField(max_length=150, blank=True, default="")
    last_name = models.CharField(max_length=150, blank=True, default="")
    language = models.CharField(max_length=16, blank=True, default="")
    time_zone = models.CharField(max_length=64, blank=True, default="", help_text=_("IANA name, e.g. Europe/Paris"))
    attributes = models.JSONField(default=dict, blank=True)
    email_denylisted = models.BooleanField(default=False)
    sms_denylisted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["last_name", "first_name"]),
            models.Index(fields=["language"]),
            models.Index(fields=["created_at"]),
        ]

    def __str__(self) -> str:
        return self.email or self.phone or f"Profile {self.pk}"

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class Audience(models.Model):
    class Kind(models.TextChoices):
        LIST = "list", _("List")
        FILTER = "filter", _("Filter")

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.LIST)
    # For filters: {"op": "and"|"or", "conditions": [{"field": ..., "operator": ..., "value": ...} | nested group]}
    conditions = models.JSONField(default=dict, blank=True)
    members = models.ManyToManyField(Profile, through="AudienceMember", related_name="audiences", blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class AudienceMember(models.Model):
    audience = models.ForeignKey(Audience, on_delete=models.CASCADE, related_name="memberships")
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="memberships")
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["audience", "profile"], name="audience_member_unique")]
        indexes = [models.Index(fields=["profile"])]


class Quarantine(models.Model):
    """Deliverability of one address on one channel (DOMAIN.md §5). `address` is lower-cased."""

    class Status(models.TextChoices):
        UNKNOWN = "unknown", _("Unknown")
        ERRONEOUS = "erroneous", _("Erroneous")
        VALID = "valid", _("Valid")
        DENYLIST = "denylist", _("On denylist")
        QUARANTINE = "quarantine", _("Quarantine")
        ALLOWLIST = "allowlist", _("On allowlist")

    address = models.CharField(max_length=254)
    channel = models.CharField(max_length=10, choices=Channel.choices, default=Channel.EMAIL)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.UNKNOWN)
    error_count = models.PositiveIntegerField(default=0)
    last_error_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=64, blank=True, default="")
    text = models.TextField(blank=True, default="")
    last_delivery_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["address"]
        constraints = [
            models.UniqueConstraint(fields=["address", "channel"], name="quarantine_address_channel_unique"),
            models.CheckConstraint(condition=Q(address=models.functions.Lower("address")), name="quarantine_address_lowercase"),
        ]
        indexes = [models.Index(fields=["channel", "status"])]

    def __str__(self) -> str:
        return f"{self.address} ({self.channel}): {self.get_status_display()}"
