"""Writes of the deliveries app: editing, preparation, approval, Confirm send, pause/resume/stop.

Every state change is a conditional update (or a locked row) inside a transaction; side effects
(tasks) are enqueued after commit. Permission checks live here, whoever calls.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from accounts.errors import DispatchError, InvalidInput
from accounts.models import RoleAuditLog
from accounts.roles import ADMINISTRATION, PREPARE_DELIVERY
from accounts.services import audit_record, require_role
from audiences.emails import is_valid_email

from . import clock
from .lifecycle import (  # noqa: F401  (the names callers found here)
    ALREADY_CONFIRMED,
    ARCHIVE_DENIED,
    CHANGED_AFTER_PREPARATION,
    CONFIRM_CODES,
    CONFIRM_DENIED,
    EDITABLE_STATES,
    FINISHED_TEXT,
    NOT_PREPARED,
    PAUSE_DENIED,
    RESENDABLE_STATES,
    RESUME_DENIED,
    STOP_DENIED,
    access_refusal,
    confirm_refusal,
    delivery_send_ended,
    illegal,
    is_approved,
    journal_add,
    lock,
    may,
    schedule_passed,
    sentence,
    started_text,
    transition,
    who,
)
from .models import (
    MAX_VALIDITY,
    ApprovalPolicy,
    ApprovalPolicyChange,
    Delivery,
    FailureReason,
    FailureType,
    JournalEntry,
    MessageCategory,
    SendingLog,
    SendingPolicy,
    SendingStatus,
    SendTime,
    State,
)
from .preparation import (  # noqa: F401  (the task, the tick and callers find them here)
    deliveries_fail_stuck_preparations,
    delivery_prepare_run,
)
from .selectors import sending_policy_get  # noqa: F401  (a read: callers found it here)

log = logging.getLogger(__name__)

# Fields whose change sends a prepared message back to editing.
PREPARED_FIELDS = (
    "label", "channel", "sender_name", "sender_address", "reply_to", "subject", "html", "text",
    "audience", "schedule", "scheduled_at", "schedule_tz", "validity", "category",
    "send_time", "send_time_attribute", "send_time_offset_hours",
)  # fmt: skip
EDITABLE_FIELDS = (*PREPARED_FIELDS, "rate_limit_per_hour")

_locked = lock


def _clean(data: dict) -> dict:
    data = {k: v for k, v in data.items() if k in EDITABLE_FIELDS}
    errors = {}  # field -> what is wrong with it
    if not (data.get("label") or "").strip():
        errors["label"] = _("Give the message a label.")
    validity = data.get("validity")
    if validity is not None:
        if isinstance(validity, (int, float)):
            validity = data["validity"] = timedelta(hours=validity)
        if validity <= timedelta(0) or validity > MAX_VALIDITY:
            errors["validity"] = _("The validity period must be more than 0 and at most 3.5 days (84 hours).")
    if data.get("schedule") == Delivery.Schedule.AT and not data.get("scheduled_at"):
        errors["scheduled_at"] = _("Choose the date and time of the send, or choose to send once confirmed.")
    if data.get("schedule") != Delivery.Schedule.AT:
        data["scheduled_at"] = None
    if data.get("sender_address") and not is_valid_email(data["sender_address"]):
        errors["sender_address"] = _("The sender address is not a valid email address.")
    if data.get("reply_to") and not is_valid_email(data["reply_to"]):
        errors["reply_to"] = _("The reply-to address is not a valid email address.")
    if data.get("category") is None:
        data["category"] = MessageCategory.objects.get(pk=MessageCategory.default_id())
    send_time = data.get("send_time") or SendTime.NONE
    if send_time not in SendTime.values:
        errors["send_time"] = _("Choose how to optimize the sending time: no optimization, the recipient's time zone, or a profile attribute.")
    elif send_time == SendTime.RECIPIENT_TZ and data.get("schedule") != Delivery.Schedule.AT:
        errors["send_time"] = _(
            "Sending at the recipient's time zone needs a contact date: choose “At a date and time” (each recipient gets it at that time in their own zone)."
        )
    elif send_time == SendTime.ATTRIBUTE and not re.fullmatch(r"[\w.-]{1,100}", (data.get("send_time_attribute") or "").strip()):
        errors["send_time_attribute"] = _("Name the profile attribute that holds the send date (for example: birthday).")
    offset = data.get("send_time_offset_hours") or 0
    if not isinstance(offset, int) or not -720 <= offset <= 720:
        errors["send_time_offset_hours"] = _("The offset is a whole number of hours between -720 and 720.")
    if send_time != SendTime.ATTRIBUTE:
        data["send_time_attribute"], data["send_time_offset_hours"] = "", 0
    else:
        data["send_time_attribute"] = (data.get("send_time_attribute") or "").strip()
    if errors:
        raise InvalidInput(" ".join(errors.values()), code="invalid", fields=errors)
    return data


def _refuse_past_schedule(data: dict) -> None:
    """A message is never saved to be sent at a time already gone (it would go out at once). At the
    recipient's time zone the contact time is read in each zone: it may be past here and ahead
    elsewhere, so the Confirm dialog warns instead (DECISIONS #9)."""
    at = data.get("scheduled_at")
    if data.get("send_time") == SendTime.RECIPIENT_TZ:
        return
    if data.get("schedule") == Delivery.Schedule.AT and at is not None and at <= clock.now():
        message = _("The send time is in the past: choose a later time or Send once confirmed.")
        raise InvalidInput(message, code="schedule_in_the_past", fields={"scheduled_at": message})


# --- editing --------------------------------------------------------------------------------
def delivery_create(*, user, data: dict) -> Delivery:
    require_role(user=user, role=PREPARE_DELIVERY)
    data = _clean(data)
    _refuse_past_schedule(data)
    with transaction.atomic():
        delivery = Delivery.objects.create(**data, created_by=user, updated_by=user)
        journal_add(delivery=delivery, text=_("Message created by %(who)s.") % {"who": who(user)}, user=user)
    return delivery


def delivery_update(*, delivery, user, data: dict) -> Delivery:
    """Edit a message. Editing content, audience or schedule after preparation sends it back to
    editing (journaled) and clears approvals; a message whose send has started is read-only."""
    denied = access_refusal(user=user, action="edit")
    if denied:
        raise denied
    data = _clean({**{f: getattr(delivery, f) for f in EDITABLE_FIELDS}, **data})
    with transition(delivery=delivery, action="edit", user=user) as step:
        d = step.delivery
        changed = [f for f in EDITABLE_FIELDS if getattr(d, f) != data[f]]
        if not changed:
            step.nothing()
            return d
        _refuse_past_schedule(data)
        before_category = d.category
        for f in changed:
            setattr(d, f, data[f])
        d.updated_by = user
        if "category" in changed:
            journal_add(
                delivery=d,
                user=user,
                text=_("Category changed from “%(before)s” to “%(after)s” by %(who)s: approval is %(required)s.")
                % {
                    "before": before_category.name,
                    "after": d.category.name,
                    "who": who(user),
                    "required": _("required") if d.requires_approval else _("not required"),
                },
            )
        if any(f in PREPARED_FIELDS for f in changed):
            if user.pk not in d.edited_since_approval:
                d.edited_since_approval = [*d.edited_since_approval, user.pk]
            d.revision += 1
            d.content_approved_by = d.target_approved_by = None
            d.content_approved_at = d.target_approved_at = None
            if d.state in (State.READY, State.PREPARATION_FAILED):
                step.target = State.EDITING
                d.targeted_count = d.to_deliver_count = d.warnings_count = 0  # the figures of a preparation now obsolete
                step.journal(
                    _("Message edited by %(who)s after preparation: back to editing. Prepare it again before sending.") % {"who": who(user)},
                    level=JournalEntry.Level.WARNING,
                )
        step.save()
    return d


def delivery_duplicate(*, delivery, user) -> Delivery:
    """A new message in editing with the same content; the schedule is cleared."""
    require_role(user=user, role=PREPARE_DELIVERY)
    data = {f: getattr(delivery, f) for f in EDITABLE_FIELDS}
    data.update(label=_("%(label)s (copy)") % {"label": delivery.label}, schedule=Delivery.Schedule.NOW, scheduled_at=None)
    with transaction.atomic():
        copy = Delivery.objects.create(**data, created_by=user, updated_by=user)
        journal_add(delivery=copy, user=user, text=_("Duplicated from %(id)s by %(who)s.") % {"id": delivery.human_id, "who": who(user)})
    return copy


def delivery_delete(*, delivery, user, source: str = "page") -> None:
    """Delete a message never sent (Editing, prepared, or whose preparation failed) with its
    journal, logs and KPIs; the audit trail keeps a line saying who and what. A message whose send
    started cannot be deleted: once ended it is archived (delivery_archive)."""
    with transition(delivery=delivery, action="delete", user=user) as step:
        d = step.delivery
        audit_record(actor=user, action=RoleAuditLog.Action.MESSAGE_DELETED, target=str(d), source=source)
        d.delete()
        step.nothing()


def delivery_archive(*, delivery, user, source: str = "page") -> Delivery:
    """Archive a message whose send ended: hidden from the lists, kept for the profiles' history,
    fatigue counts and KPIs. Journaled, and in the audit trail."""
    with transition(delivery=delivery, action="archive", user=user) as step:
        d = step.delivery
        d.archived_at, d.archived_by = timezone.now(), user
        step.save("archived_at", "archived_by")
        audit_record(actor=user, action=RoleAuditLog.Action.MESSAGE_ARCHIVED, target=str(d), source=source)
    return d


# --- preparation ----------------------------------------------------------------------------
def delivery_prepare(*, delivery, user) -> Delivery:
    """Start the preparation (Prepare deliveries): the task runs it after commit."""
    with transition(delivery=delivery, action="prepare", user=user) as step:
        d = step.delivery
        missing = []
        if d.audience_id is None:
            missing.append(_("an audience"))
        if not (d.html or d.text):
            missing.append(_("content"))
        if missing:
            raise DispatchError(_("Set %(what)s before preparing the message.") % {"what": _(" and ").join(missing)}, code="incomplete")
        d.progress, d.stop_requested = 0, False
        d.targeted_count = d.to_deliver_count = d.warnings_count = 0  # this preparation replaces the last one's figures
        step.save("progress", "stop_requested", "targeted_count", "to_deliver_count", "warnings_count")
    return d


def delivery_stop_preparation(*, delivery, user) -> Delivery:
    with transition(delivery=delivery, action="stop-preparation", user=user) as step:
        d = step.delivery
        d.stop_requested, d.progress = True, 0
        step.save("stop_requested", "progress")
    return d


# --- approval -------------------------------------------------------------------------------
def delivery_approve(*, delivery, user, part: str) -> Delivery:
    """Approve the content or the target of someone else's prepared message."""
    denied = access_refusal(user=user, action="approve")
    if denied:
        raise denied
    if part not in ("content", "target"):
        raise InvalidInput(_("Choose what to approve: “content” or “target”."), code="invalid")
    with transition(delivery=delivery, action="approve", user=user) as step:
        d = step.delivery
        setattr(d, f"{part}_approved_by", user)
        setattr(d, f"{part}_approved_at", timezone.now())
        d.edited_since_approval = []  # whoever edits from now on is the next one who cannot approve
        step.save(f"{part}_approved_by", f"{part}_approved_at", "edited_since_approval")
        step.journal(_("%(part)s approved by %(who)s.") % {"part": _("Content") if part == "content" else _("Target"), "who": who(user)})
    return d


# --- Confirm send ---------------------------------------------------------------------------
def delivery_confirm(*, delivery, user, revision: int | None = None, send_now: bool = False) -> Delivery:
    """Confirm send: in one transaction with the row locked, check role, state, approvals and that
    nothing changed since preparation; then start (or schedule) the send and enqueue it after commit.
    A second confirmation is refused and enqueues nothing. A message whose send time has passed
    since it was saved is refused unless `send_now` says to send it now."""
    with transition(delivery=delivery, action="confirm", user=user) as step:
        d = step.delivery
        reason = confirm_refusal(delivery=d, revision=revision, check_role=False)  # the revision the person reviewed
        if reason:
            raise DispatchError(reason, code=CONFIRM_CODES.get(reason, "invalid_state"))
        now = clock.now()
        passed = schedule_passed(d, now)
        if passed and not send_now:
            raise DispatchError(
                _("The send time, %(when)s, has passed: send now, or edit the message to choose a later time.")
                % {"when": scheduled_text(d)},
                code="schedule_passed",
            )
        d.confirmed_by, d.confirmed_at = user, now
        step.save("confirmed_by", "confirmed_at")
        step.journal(started_text(user))
        if passed:
            step.journal(_("The send time, %(when)s, had passed: sent now at the request of %(who)s.") % {"when": scheduled_text(d), "who": who(user)})
        starts_at = d.first_due_at if d.send_time != SendTime.NONE else (d.scheduled_at if d.schedule == Delivery.Schedule.AT else None)
        if starts_at and starts_at > now:
            step.target = State.START_PENDING
            if d.send_time != SendTime.NONE:
                step.journal(_("Waiting for the first recipients' time: %(when)s.") % {"when": f"{starts_at:%Y-%m-%d %H:%M} UTC"})
            else:
                step.journal(_("Waiting for the scheduled date: %(when)s.") % {"when": scheduled_text(d)})
        else:
            d.started_at = now
            step.save("started_at")  # in progress: the dispatcher is enqueued after commit
    return d


def scheduled_text(d: Delivery) -> str:
    from zoneinfo import ZoneInfo

    try:
        tz = ZoneInfo(d.schedule_tz or "UTC")
    except Exception:
        tz = ZoneInfo("UTC")
    return f"{d.scheduled_at.astimezone(tz):%Y-%m-%d %H:%M} ({tz.key})"


def deliveries_start_due(*, now: datetime | None = None) -> list[int]:
    """Start scheduled messages whose time has come (beat, every minute)."""
    now = now or clock.now()
    started = []
    due = Q(send_time=SendTime.NONE, scheduled_at__lte=now) | (~Q(send_time=SendTime.NONE) & Q(first_due_at__lte=now))
    for pk in Delivery.objects.filter(due, state=State.START_PENDING).values_list("pk", flat=True):
        try:
            with transition(delivery=pk, action="scheduled-time") as step:
                step.delivery.started_at = now
                step.save("started_at")
        except (DispatchError, Delivery.DoesNotExist):  # stopped (or gone) since it was listed
            continue
        started.append(pk)
    return started


# --- pause, resume, stop --------------------------------------------------------------------
# Delivery supervisors watching an alert may pause or stop a send themselves (DOMAIN §3); resuming
# it, like confirming, stays with Start deliveries (the access table: deliveries.lifecycle.ACTIONS).
def user_can_pause_stop(*, user) -> bool:
    return may(user=user, action="pause")


def delivery_pause(*, delivery, user) -> Delivery:
    with transition(delivery=delivery, action="pause", user=user) as step:
        return step.delivery


def delivery_resume(*, delivery, user) -> Delivery:
    """Resume a paused send: the dispatcher is enqueued after commit."""
    with transition(delivery=delivery, action="resume", user=user) as step:
        return step.delivery


def delivery_stop(*, delivery, user) -> Delivery:
    """Stop sending: unsent logs become cancelled (final); messages already handed over stay sent."""
    with transition(delivery=delivery, action="stop", user=user) as step:
        d = step.delivery
        now = timezone.now()
        cancelled = SendingLog.objects.filter(delivery=d, status=SendingStatus.PENDING).update(
            status=SendingStatus.CANCELLED, event_at=now, next_attempt_at=None
        )
        d.finished_at = now
        d.processed_count = F("processed_count") + cancelled
        step.save("finished_at", "processed_count")
        step.journal(
            ngettext(
                "Delivery stopped by %(who)s: %(n)d message not sent was cancelled.",
                "Delivery stopped by %(who)s: %(n)d messages not sent were cancelled.",
                cancelled,
            )
            % {"who": who(user), "n": cancelled}
        )
    d.refresh_from_db()
    return d


def delivery_resend_unknown(*, delivery, user) -> Delivery:
    """Send once more the messages in an unknown state (their worker died, or the connection was
    lost after their content went out: the relay may or may not have them). An operator's choice,
    never automatic: a recipient who got the first copy gets a second. Within the validity period
    only; a finished send goes back in progress (journaled with the count)."""
    with transition(delivery=delivery, action="resend-unknown", user=user) as step:
        d = step.delivery
        now = timezone.now()
        ends = (d.started_at or now) + d.validity
        if ends <= now:
            raise DispatchError(
                _("The validity period of this send ended on %(when)s: its messages cannot go any more. Duplicate the message to send it again.")
                % {"when": f"{ends:%Y-%m-%d %H:%M} UTC"},
                code="validity_ended",
            )
        n = SendingLog.objects.filter(delivery=d, status=SendingStatus.UNKNOWN).update(
            status=SendingStatus.PENDING, event_at=None, next_attempt_at=None, claimed_at=None, claim_token=None,
            failure_type="", failure_reason="", failure_text="",
        )  # fmt: skip
        if not n:
            raise DispatchError(_("No message of this send is in an unknown state: there is nothing to resend."), code="nothing_to_resend")
        d.processed_count = F("processed_count") - n
        step.save("processed_count")
        if d.state in (State.FINISHED, State.FAILED, State.RETRY_PENDING):
            d.finished_at = None
            step.save("finished_at")  # back in progress: the dispatcher is enqueued after commit
        else:
            step.target = None  # in progress or paused: it stays so (paused: resuming sends them)
        step.journal(
            ngettext(
                "Resend of %(n)s message in an unknown state requested by %(who)s: if its recipient received the first copy, they get it twice.",
                "Resend of %(n)s messages in an unknown state requested by %(who)s: recipients who received the first copy get it twice.",
                n,
            )
            % {"n": f"{n:,}", "who": who(user)}
        )
    d.refresh_from_db()
    return d


# --- sending policy (auto-pause) --------------------------------------------------------------
def sending_policy_update(*, user, autopause_bounce_rate: float, autopause_min_processed: int):
    """Change the auto-pause limit (Administration)."""
    require_role(user=user, role=ADMINISTRATION)
    if not 0 < autopause_bounce_rate <= 1:
        raise InvalidInput(_("The auto-pause rate must be between 0 and 1 (0.2 means 20%)."), code="invalid")
    row = SendingPolicy.objects.order_by("pk").first() or SendingPolicy()
    row.autopause_bounce_rate, row.autopause_min_processed, row.updated_by = autopause_bounce_rate, autopause_min_processed, user
    row.save()
    return row


# --- message categories and the approval policy (Administration) -------------------------------
def _policy_journal(*, user, text: str, source: str) -> None:
    ApprovalPolicyChange.objects.create(actor=user, text=text, source=source)


def category_create(*, user, name: str, requires_approval: bool = False, source: str = "page") -> MessageCategory:
    """Add a message category (Administration). Journaled."""
    require_role(user=user, role=ADMINISTRATION)
    name = (name or "").strip()
    if not name:
        raise InvalidInput(_("Give the category a name."), code="name_required", fields={"name": _("Give the category a name.")})
    with transaction.atomic():
        if MessageCategory.objects.filter(name__iexact=name).exists():
            raise InvalidInput(_("A category named “%(name)s” already exists.") % {"name": name}, code="duplicate_category")
        category = MessageCategory.objects.create(name=name[:100], requires_approval=bool(requires_approval))
        _policy_journal(
            user=user,
            source=source,
            text=_("Category “%(name)s” created by %(who)s; approval %(required)s.")
            % {"name": category.name, "who": who(user), "required": _("required") if category.requires_approval else _("not required")},
        )
    return category


def category_update(*, user, category: MessageCategory, name: str | None = None, requires_approval: bool | None = None, source: str = "page") -> MessageCategory:
    """Rename a category or switch whether its messages need approval (Administration). Journaled."""
    require_role(user=user, role=ADMINISTRATION)
    with transaction.atomic():
        row = MessageCategory.objects.select_for_update().get(pk=category.pk)
        if name is not None:
            name = name.strip()
            if not name:
                raise InvalidInput(_("Give the category a name."), code="name_required")
            if name != row.name:
                if MessageCategory.objects.filter(name__iexact=name).exclude(pk=row.pk).exists():
                    raise InvalidInput(_("A category named “%(name)s” already exists.") % {"name": name}, code="duplicate_category")
                _policy_journal(user=user, source=source, text=_("Category “%(before)s” renamed “%(after)s” by %(who)s.") % {"before": row.name, "after": name, "who": who(user)})
                row.name = name[:100]
        if requires_approval is not None and bool(requires_approval) != row.requires_approval:
            row.requires_approval = bool(requires_approval)
            _policy_journal(
                user=user,
                source=source,
                text=(_("%(who)s made approval required for the messages of “%(name)s”.") if row.requires_approval else _("%(who)s made approval optional for the messages of “%(name)s”."))
                % {"who": who(user), "name": row.name},
            )
        row.save()
    return row


def approval_policy_get() -> ApprovalPolicy:
    return ApprovalPolicy.objects.order_by("pk").first() or ApprovalPolicy(require_for_all=False)


def approval_policy_set(*, user, require_for_all: bool, source: str = "page") -> ApprovalPolicy:
    """Require approval for every message, whatever its category, or not (Administration). Journaled."""
    require_role(user=user, role=ADMINISTRATION)
    with transaction.atomic():
        row = ApprovalPolicy.objects.select_for_update().order_by("pk").first() or ApprovalPolicy()
        if row.pk and row.require_for_all == bool(require_for_all):
            return row
        row.require_for_all, row.updated_by = bool(require_for_all), user
        row.save()
        _policy_journal(
            user=user,
            source=source,
            text=(_("%(who)s made approval required for every message.") if row.require_for_all else _("%(who)s made approval depend on each message's category."))
            % {"who": who(user)},
        )
    return row


def sending_log_bounce(*, log: SendingLog, failure_type: str, failure_reason: str, text: str, at, reported_by: str) -> bool:
    """A bounce reported after the relay accepted the message (a provider's event: DOMAIN.md §4,
    Delivered % can go down during the validity period). A sent log turns failed, the message's
    counters move with it and the journal says so, in one transaction; a log already failed (or
    never sent) stays as it is. True when the log changed. Called by tracking, which hears the
    providers; the address's quarantine is audiences' (tracking tells it too)."""
    with transaction.atomic():
        changed = SendingLog.objects.filter(pk=log.pk, status=SendingStatus.SENT).update(
            status=SendingStatus.FAILED, failure_type=failure_type, failure_reason=failure_reason, failure_text=text, event_at=at
        )
        if not changed:
            return False
        Delivery.objects.filter(pk=log.delivery_id).update(sent_count=F("sent_count") - 1, failed_count=F("failed_count") + 1)
        journal_add(
            delivery=log.delivery_id,
            level=JournalEntry.Level.WARNING,
            text=_("Asynchronous bounce for %(address)s reported by %(esp)s: %(reason)s (%(type)s).")
            % {
                "address": log.address,
                "esp": reported_by,
                "reason": FailureReason(failure_reason).label,
                "type": FailureType(failure_type).label,
            },
        )
    return True


def delivery_alert_flag_set(*, delivery_id: int, open_alert: bool) -> None:
    """Record whether the message has an alert not yet acknowledged (shown as Warning in lists).
    Called by the ops app, which owns alerts."""
    Delivery.objects.filter(pk=delivery_id).exclude(has_open_alert=open_alert).update(has_open_alert=open_alert)
