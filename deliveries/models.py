from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from audiences.failures import FailureReason, FailureType  # noqa: F401  (the vocabulary lives in audiences; imported from here too)
from audiences.models import Audience, Channel, Profile

MAX_VALIDITY = timedelta(hours=84)  # 3.5 days (DOMAIN.md §5)


class State(models.TextChoices):
    """Detailed delivery states (DOMAIN.md §2); the labels are what people read."""

    EDITING = "editing", _("Editing")
    PREPARING = "preparing", _("Preparing send…")
    PREPARATION_FAILED = "preparation_failed", _("Personalization or count failed")
    READY = "ready", _("Ready to be delivered")
    START_PENDING = "start_pending", _("Start pending")
    IN_PROGRESS = "in_progress", _("In progress")
    RETRY_PENDING = "retry_pending", _("Sending (retry)")
    RETRY_IN_PROGRESS = "retry_in_progress", _("Sending (retry)")
    PAUSED = "paused", _("Paused")
    STOPPED = "stopped", _("Stopped")
    FAILED = "failed", _("Failed")
    FINISHED = "finished", _("Finished")


class LogicalStatus(models.TextChoices):
    EDITING = "editing", _("Editing")
    IN_PROGRESS = "in_progress", _("In progress")
    FINISHED = "finished", _("Finished")
    WARNING = "warning", _("Warning")
    ERRONEOUS = "erroneous", _("Erroneous")


STATE_NUMBER = {
    State.EDITING: 0,
    State.PREPARING: 11,
    State.PREPARATION_FAILED: 37,
    State.READY: 45,
    State.START_PENDING: 51,
    State.IN_PROGRESS: 55,
    State.RETRY_PENDING: 61,
    State.RETRY_IN_PROGRESS: 62,
    State.PAUSED: 75,
    State.STOPPED: 85,
    State.FAILED: 87,
    State.FINISHED: 95,
}
LOGICAL = {
    State.EDITING: LogicalStatus.EDITING,
    State.PREPARING: LogicalStatus.EDITING,
    State.PREPARATION_FAILED: LogicalStatus.ERRONEOUS,
    State.READY: LogicalStatus.EDITING,
    State.START_PENDING: LogicalStatus.IN_PROGRESS,
    State.IN_PROGRESS: LogicalStatus.IN_PROGRESS,
    State.RETRY_PENDING: LogicalStatus.IN_PROGRESS,
    State.RETRY_IN_PROGRESS: LogicalStatus.IN_PROGRESS,
    State.PAUSED: LogicalStatus.IN_PROGRESS,
    State.STOPPED: LogicalStatus.ERRONEOUS,
    State.FAILED: LogicalStatus.ERRONEOUS,
    State.FINISHED: LogicalStatus.FINISHED,
}
def logical_status_q(status: str) -> Q:
    """The filter matching `Delivery.logical_status == status`, for lists and counts in SQL."""
    warning = Q(state=State.READY, warnings_count__gt=0) | Q(
        has_open_alert=True, state__in=[s for s, lg in LOGICAL.items() if lg in (LogicalStatus.IN_PROGRESS, LogicalStatus.FINISHED)]
    )
    if status == LogicalStatus.WARNING:
        return warning
    return Q(state__in=[s for s, lg in LOGICAL.items() if lg == status]) & ~warning


SENDING_STATES = (State.IN_PROGRESS, State.RETRY_PENDING, State.RETRY_IN_PROGRESS, State.PAUSED)
PAUSABLE_STATES = (State.IN_PROGRESS, State.RETRY_PENDING, State.RETRY_IN_PROGRESS)
STOPPABLE_STATES = (State.START_PENDING, *SENDING_STATES)
STARTED_STATES = (State.START_PENDING, *SENDING_STATES, State.STOPPED, State.FAILED, State.FINISHED)
FINAL_STATES = (State.STOPPED, State.FAILED, State.FINISHED)


DEFAULT_CATEGORY = "General"


class MessageCategory(models.Model):
    """A kind of message (newsletter, transactional…): a small list Administration manages. A
    message has one; Administration decides per category whether its messages need approval."""

    name = models.CharField(max_length=100, unique=True)
    requires_approval = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "message categories"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def default_id(cls) -> int:
        """The category a message gets unless another is chosen ("General", made when missing)."""
        return cls.objects.get_or_create(name=DEFAULT_CATEGORY)[0].pk


class ApprovalPolicy(models.Model):
    """Whether every message needs approval, whatever its category (one row, Administration)."""

    require_for_all = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        verbose_name_plural = "approval policy"


class ApprovalPolicyChange(models.Model):
    """The journal of Administration's approval decisions: a category made, renamed, its approval
    switched, or approval required for every message."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    text = models.TextField()
    source = models.CharField(max_length=16, default="page")  # page, api

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return self.text


def approval_required_for_all() -> bool:
    return ApprovalPolicy.objects.filter(require_for_all=True).exists()


def with_approval(queryset):
    """Messages with what `Delivery.requires_approval` reads, in the same query."""
    return queryset.select_related("category").annotate(
        approval_for_all=models.Exists(ApprovalPolicy.objects.filter(require_for_all=True))
    )


class SendTime(models.TextChoices):
    NONE = "none", _("No optimization")
    RECIPIENT_TZ = "recipient_tz", _("Send at the recipient's time zone")
    ATTRIBUTE = "attribute", _("Send at a date from a profile attribute")


class Delivery(models.Model):
    """A message (a delivery) and its send. The human ID is DM<id>."""

    class Schedule(models.TextChoices):
        NOW = "now", _("Send once confirmed")
        AT = "at", _("At a date and time")

    label = models.CharField(max_length=200)
    channel = models.CharField(max_length=10, choices=Channel.choices, default=Channel.EMAIL)
    sender_name = models.CharField(max_length=200, blank=True, default="")
    sender_address = models.CharField(max_length=254, blank=True, default="")
    reply_to = models.CharField(max_length=254, blank=True, default="")
    subject = models.CharField(max_length=500, blank=True, default="")
    html = models.TextField(blank=True, default="")
    text = models.TextField(blank=True, default="", help_text=_("Derived from the HTML when empty."))
    audience = models.ForeignKey(Audience, null=True, blank=True, on_delete=models.PROTECT, related_name="deliveries")
    schedule = models.CharField(max_length=4, choices=Schedule.choices, default=Schedule.NOW)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    schedule_tz = models.CharField(max_length=64, blank=True, default="UTC")
    # "Optimize the sending time per recipient" (DOMAIN.md §1.9): each sending log gets its own due
    # time at preparation; the first and last are kept for the Confirm dialog and the start.
    send_time = models.CharField(max_length=12, choices=SendTime.choices, default=SendTime.NONE)
    send_time_attribute = models.CharField(max_length=100, blank=True, default="")
    send_time_offset_hours = models.SmallIntegerField(default=0)
    first_due_at = models.DateTimeField(null=True, blank=True)
    last_due_at = models.DateTimeField(null=True, blank=True)
    validity = models.DurationField(default=MAX_VALIDITY)
    category = models.ForeignKey(MessageCategory, on_delete=models.PROTECT, related_name="deliveries", default=MessageCategory.default_id)
    # Who edited the content (or audience, schedule…) since the last approval: they cannot approve it.
    edited_since_approval = models.JSONField(default=list, blank=True)
    rate_limit_per_hour = models.PositiveIntegerField(null=True, blank=True)

    state = models.CharField(max_length=20, choices=State.choices, default=State.EDITING, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0)  # preparation %
    revision = models.PositiveIntegerField(default=1)  # bumped by every edit of content, audience or schedule
    prepared_revision = models.PositiveIntegerField(null=True, blank=True)
    prepared_at = models.DateTimeField(null=True, blank=True)
    preparation_task_id = models.CharField(max_length=64, blank=True, default="")
    stop_requested = models.BooleanField(default=False)
    targeted_count = models.PositiveIntegerField(default=0)
    to_deliver_count = models.PositiveIntegerField(default=0)
    warnings_count = models.PositiveIntegerField(default=0)

    content_approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    content_approved_at = models.DateTimeField(null=True, blank=True)
    target_approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    target_approved_at = models.DateTimeField(null=True, blank=True)

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)
    confirmed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    confirmed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Cheap live counters, kept by the sender as outcomes are written (read by progress and dashboards).
    sent_count = models.PositiveIntegerField(default=0)
    # Recipients who left since preparation (skipped at send time): taken off to_deliver_count.
    skipped_count = models.PositiveIntegerField(default=0)
    retry_passes = models.PositiveSmallIntegerField(default=0)  # retry passes started so far
    # Batch tasks enqueued for the current pass and not ended yet: the last one to end closes the
    # pass. A hint, not a lock (a lost task leaves it high: the reconciler resets it).
    batches_open = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    processed_count = models.PositiveIntegerField(default=0)
    autopaused_at = models.DateTimeField(null=True, blank=True)  # the send paused itself (bounce limit)
    has_open_alert = models.BooleanField(default=False)  # an alert not yet acknowledged (kept by the ops app)
    # An ended message is archived, never deleted: hidden from the lists, kept for the profiles'
    # history, fatigue counts and KPIs.
    archived_at = models.DateTimeField(null=True, blank=True)
    archived_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["state", "scheduled_at"]),
            models.Index(fields=["channel", "state"]),
            models.Index(fields=["started_at"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(schedule="now") | Q(scheduled_at__isnull=False), name="delivery_scheduled_at_required"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.human_id})"

    @property
    def human_id(self) -> str:
        return f"DM{self.pk}"

    @property
    def requires_approval(self) -> bool:
        """Set by Administration, never by the author: the message's category requires approval,
        or every message does. The lists fetch both with the messages (`with_approval` below);
        elsewhere they are read when asked."""
        if "approval_for_all" in self.__dict__:
            for_all = self.__dict__["approval_for_all"]
        else:
            for_all = approval_required_for_all()
        return bool(for_all) or bool(self.category.requires_approval)

    @property
    def logical_status(self) -> str:
        """DOMAIN.md §2: Warning when in progress or finished with an alert not yet acknowledged,
        or prepared with warnings; otherwise the state's own logical status."""
        logical = LOGICAL[State(self.state)]
        if self.state == State.READY and self.warnings_count:
            return LogicalStatus.WARNING
        if self.has_open_alert and logical in (LogicalStatus.IN_PROGRESS, LogicalStatus.FINISHED):
            return LogicalStatus.WARNING
        return logical

    @property
    def status_class(self) -> str:
        """The colour of its status dot: the logical status, except that a paused send has its own
        (it is not moving, unlike In progress); a warning still shows as a warning."""
        logical = self.logical_status
        if self.state == State.PAUSED and logical == LogicalStatus.IN_PROGRESS:
            return "paused"
        return logical

    @property
    def state_number(self) -> int:
        return STATE_NUMBER[State(self.state)]

    @property
    def is_read_only(self) -> bool:
        return self.state in STARTED_STATES

    @property
    def approvals_waiting(self) -> list[str]:
        """What still needs an approval before this prepared message can be confirmed ("content", "target")."""
        if self.state != State.READY or not self.requires_approval:
            return []
        return [part for part, at in ((_("content"), self.content_approved_at), (_("target"), self.target_approved_at)) if not at]

    @property
    def state_label(self) -> str:
        """The state as people read it: a prepared message still waiting for approvals says so."""
        waiting = self.approvals_waiting
        if waiting:
            return _("Waiting for approval: %(parts)s") % {"parts": ", ".join(str(p) for p in waiting)}
        return State(self.state).label

    @property
    def shows_to_deliver(self) -> bool:
        """Its "To deliver" is that of the current preparation (not of one an edit or a new
        preparation made obsolete, nor of a failed one, which delivers nothing)."""
        return self.state == State.READY or self.state in STARTED_STATES

    @property
    def shows_targeted(self) -> bool:
        """Its "Targeted" count and exclusions are those of the current preparation (a failed one included)."""
        return self.shows_to_deliver or self.state == State.PREPARATION_FAILED


class JournalEntry(models.Model):
    class Level(models.TextChoices):
        INFO = "info", _("Info")
        WARNING = "warning", _("Warning")
        CRITICAL = "critical", _("Critical")

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="journal")
    at = models.DateTimeField(auto_now_add=True)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    text = models.TextField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["delivery", "at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} [{self.level}] {self.text}"


class ExclusionCause(models.TextChoices):
    NO_ADDRESS = "no_address", _("Address not specified")
    INVALID_SYNTAX = "invalid_syntax", _("Invalid address syntax")
    DENYLIST = "denylist", _("Address on denylist")
    QUARANTINE = "quarantine", _("Quarantined address")
    DUPLICATE = "duplicate", _("Duplicate")
    EXCLUDED_DOMAIN = "excluded_domain", _("Excluded domain")
    PROFILE_DELETED = "profile_deleted", _("Profile deleted")  # found at send time only
    SEND_DATE_MISSING = "send_date_missing", _("Send date empty or not a date")  # the profile attribute of the send time


class ExclusionLog(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="exclusions")
    profile = models.ForeignKey(Profile, null=True, on_delete=models.SET_NULL, related_name="+")
    address = models.CharField(max_length=254, blank=True, default="")
    cause = models.CharField(max_length=20, choices=ExclusionCause.choices)
    # Empty for preparation's exclusions; when the sender found the recipient gone at send time.
    found_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["delivery", "cause"])]


class SendingStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    FAILED = "failed", _("Failed")
    UNKNOWN = "unknown", _("Unknown")
    CANCELLED = "cancelled", _("Cancelled")
    # The recipient left since preparation (unsubscribed, denylisted, quarantined, deleted): not
    # sent, counted apart from the messages to deliver; `exclusion_cause` says why (DOMAIN.md §5).
    SKIPPED = "skipped", _("Skipped")


FINAL_SENDING = (SendingStatus.SENT, SendingStatus.FAILED, SendingStatus.UNKNOWN, SendingStatus.CANCELLED, SendingStatus.SKIPPED)


class SendingLog(models.Model):
    """One recipient of one delivery. Created by preparation (pending); exactly one final status."""

    # No index of their own: (delivery, address) and (profile, delivery) lead with them.
    # No database constraint either: checking a million new rows' keys at commit (and locking every
    # profile row to do it) cost preparation 7-12 s of its ~20 (bench/README.md). Django's deletion
    # still cascades (delivery) and sets NULL (profile); a profile row gone any other way counts as
    # deleted for the consent check at send time, like a NULL.
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="sending_logs", db_index=False, db_constraint=False)
    profile = models.ForeignKey(Profile, null=True, on_delete=models.SET_NULL, related_name="sending_logs", db_index=False, db_constraint=False)
    address = models.CharField(max_length=254)  # snapshot of the profile's address at preparation
    status = models.CharField(max_length=10, choices=SendingStatus.choices, default=SendingStatus.PENDING)
    failure_type = models.CharField(max_length=8, choices=FailureType.choices, blank=True, default="")
    failure_reason = models.CharField(max_length=20, choices=FailureReason.choices, blank=True, default="")
    failure_text = models.TextField(blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField(null=True, blank=True)  # its own send time (a send per recipient time); empty: at once
    # Set with the claim (one per claimed chunk): an outcome is written only while the row still
    # holds its chunk's token, so a write that arrives after the reaper (or another claim) is void.
    claim_token = models.BigIntegerField(null=True, blank=True)
    exclusion_cause = models.CharField(max_length=20, choices=ExclusionCause.choices, blank=True, default="", db_default="")  # skipped rows
    event_at = models.DateTimeField(null=True, blank=True)  # when the status last changed (sent/failed time)
    message_id = models.CharField(max_length=255, blank=True, default="")
    first_open_at = models.DateTimeField(null=True, blank=True)  # first human open (set by tracking)
    first_click_at = models.DateTimeField(null=True, blank=True)  # first human click (set by tracking)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["delivery", "address"], name="sending_log_delivery_address_unique")]
        indexes = [
            # Lists by status (the Deployment window: a page of one status in id order) and the KPIs:
            # the recompute is one GROUP BY that reads this index alone, the failure type and the
            # first open / click times included, as a bare count by status would.
            models.Index(
                fields=["delivery", "status", "id"], include=["failure_type", "first_open_at", "first_click_at"], name="sending_log_status"
            ),
            # The sender's claim and the pass checks read pending rows only: a partial index that
            # rows leave once sent, instead of (delivery, status, next_attempt_at) over every row.
            models.Index(fields=["delivery", "id"], condition=Q(status="pending"), name="sending_log_pending"),
            models.Index(fields=["profile", "delivery"]),
            # The reaper: claimed rows only.
            models.Index(fields=["claimed_at"], condition=Q(status="sending"), name="sending_log_claimed"),
            # Rows that reached a final status, by time (the progress rate, the charts). Partial: the
            # rows preparation writes (no event_at yet) stay out of it.
            models.Index(fields=["delivery", "event_at"], condition=Q(event_at__isnull=False), name="sending_log_event_at"),
        ]

    def __str__(self) -> str:
        return f"{self.address} [{self.status}]"


class TrackedUrl(models.Model):
    class Kind(models.TextChoices):
        CLICK = "click", _("Email click")
        OPTOUT = "optout", _("Opt-out")
        MIRROR = "mirror", _("Mirror page")

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="tracked_urls")
    url = models.TextField()
    label = models.CharField(max_length=500, blank=True, default="")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.CLICK)
    is_template = models.BooleanField(default=False)  # holds personalization: rendered per recipient at click time

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["delivery"])]

    def __str__(self) -> str:
        return self.label or self.url


class SendingPolicy(models.Model):
    """Site-wide sending guards, editable by Administration (one row; defaults from settings)."""

    autopause_bounce_rate = models.FloatField(help_text=_("Pause a send whose bounces + errors exceed this share of processed messages (0.2 = 20%)."))
    autopause_min_processed = models.PositiveIntegerField(help_text=_("…once at least this many messages were processed."))
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(autopause_bounce_rate__gt=0) & Q(autopause_bounce_rate__lte=1), name="sending_policy_rate_range")]
