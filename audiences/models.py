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
    # Unique through Meta.constraints (not unique=True) so that PostgreSQL gets no second
    # "varchar_pattern_ops" index: nothing searches it by prefix, and every import pays for it.
    email_key = models.CharField(max_length=254, null=True, blank=True, editable=False)
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
        constraints = [models.UniqueConstraint(fields=["email_key"], name="profile_email_key_unique")]
        indexes = [
            models.Index(fields=["language"]),
            models.Index(fields=["created_at"]),
        ]

    def __str__(self) -> str:
        # A profile with no address (excluded as such) is still named: by its name, else its number.
        return self.email or self.phone or self.full_name or f"Profile {self.pk}"

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

    @property
    def reason_label(self) -> str:
        """The failure reason for people ("mailbox_full" -> "Mailbox full")."""
        return self.reason.replace("_", " ").capitalize()


class ImportJob(models.Model):
    """One CSV import (issue 3): its file, its progress and its counts. Progress lives here,
    never in Celery's result backend."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting for a worker")
        RUNNING = "running", _("Importing")
        DONE = "done", _("Finished")
        REFUSED = "refused", _("Refused")
        FAILED = "failed", _("Failed")

    audience = models.ForeignKey(Audience, null=True, blank=True, on_delete=models.SET_NULL, related_name="imports")
    file = models.FileField(upload_to="imports/%Y/%m/", blank=True)
    file_name = models.CharField(max_length=255)
    size = models.BigIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    message = models.TextField(blank=True, default="")
    columns = models.JSONField(default=list, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    progress = models.PositiveSmallIntegerField(default=0)  # percent: reading the file, then merging
    rows_read = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    merged_count = models.PositiveIntegerField(default=0)
    rejected_count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"Import {self.pk} ({self.file_name})"

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.PENDING, self.Status.RUNNING)

    @property
    def percent(self) -> int:
        return 100 if not self.is_active else min(99, self.progress)

    @property
    def unchanged_count(self) -> int:
        valid = self.rows_read - self.rejected_count
        return max(0, valid - self.created_count - self.updated_count - self.merged_count)


class ImportRejection(models.Model):
    """A problem that kept one row of an import out (a row with two problems has two entries)."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="rejections")
    line = models.PositiveIntegerField()
    column = models.CharField(max_length=100, blank=True, default="")
    value = models.CharField(max_length=200, blank=True, default="")
    reason = models.TextField()

    class Meta:
        ordering = ["job", "line", "id"]
        indexes = [models.Index(fields=["job", "line"])]


class QuarantineChange(models.Model):
    """Audit of a person's change to a quarantine row (a status edited, a row deleted)."""

    class Action(models.TextChoices):
        STATUS_CHANGED = "status_changed", _("Status changed")
        DELETED = "deleted", _("Deleted")

    address = models.CharField(max_length=254)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    action = models.CharField(max_length=20, choices=Action.choices)
    before = models.CharField(max_length=12, blank=True, default="")
    after = models.CharField(max_length=12, blank=True, default="")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    source = models.CharField(max_length=10, default="page")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["address", "channel"])]

    @property
    def before_label(self) -> str:
        return Quarantine.Status(self.before).label if self.before in Quarantine.Status.values else self.before

    @property
    def after_label(self) -> str:
        return Quarantine.Status(self.after).label if self.after in Quarantine.Status.values else self.after


class ConsentChange(models.Model):
    """Audit of a person's change to a profile's denylist flag (an opt-out set, or lifted: a
    re-subscription, which needs Administration and a reason)."""

    profile = models.ForeignKey(Profile, null=True, on_delete=models.SET_NULL, related_name="consent_changes")
    address = models.CharField(max_length=254, blank=True, default="")  # kept when the profile is deleted
    channel = models.CharField(max_length=10, choices=Channel.choices)
    denylisted = models.BooleanField()  # the flag after the change
    reason = models.TextField(blank=True, default="")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    source = models.CharField(max_length=10, default="page")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["profile", "at"])]

    def __str__(self) -> str:
        return f"{self.address} {self.channel} denylisted={self.denylisted}"
