"""Writes of the deliveries app: editing, preparation, approval, Confirm send, pause/resume/stop.

Every state change is a conditional update (or a locked row) inside a transaction; side effects
(tasks) are enqueued after commit. Permission checks live here, whoever calls.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

from celery import current_app
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop, ngettext

from accounts.errors import DispatchError, InvalidInput
from accounts.models import RoleAuditLog
from accounts.roles import ADMINISTRATION, APPROVE_DELIVERY, MONITOR_DELIVERY, PREPARE_DELIVERY, START_DELIVERY
from accounts.selectors import user_has_any_role, user_has_role
from accounts.services import audit_record, require_role
from audiences.emails import is_valid_email

from . import clock, queue
from .models import (
    FINAL_STATES,
    MAX_VALIDITY,
    STARTED_STATES,
    ApprovalPolicy,
    ApprovalPolicyChange,
    Delivery,
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

CONFIRM_DENIED = gettext_noop("Confirming a send needs the “Start deliveries” role. Ask an administrator.")
ALREADY_CONFIRMED = "This message has already been confirmed."
CHANGED_AFTER_PREPARATION = (
    "The sending cannot be confirmed because the message changed after preparation. "
    "Please restart the preparation."
)
NOT_PREPARED = "This message must be prepared before it can be confirmed."
FINISHED_TEXT = "Delivery finished (all messages have been processed)."

# Fields whose change sends a prepared message back to editing.
PREPARED_FIELDS = (
    "label", "channel", "sender_name", "sender_address", "reply_to", "subject", "html", "text",
    "audience", "schedule", "scheduled_at", "schedule_tz", "validity", "category",
    "send_time", "send_time_attribute", "send_time_offset_hours",
)  # fmt: skip
EDITABLE_FIELDS = (*PREPARED_FIELDS, "rate_limit_per_hour")
EDITABLE_STATES = (State.EDITING, State.READY, State.PREPARATION_FAILED)


# --- helpers --------------------------------------------------------------------------------
def who(user) -> str:
    return f"{user.get_full_name() or user.username} ({user.username})" if user else "system"


def sentence(text: str) -> str:
    """`text` ending with one full stop (or its own ?, ! or …): never none, never two."""
    text = str(text).rstrip()
    return text if text.endswith((".", "!", "?", "…")) else f"{text}."


def started_text(user) -> str:
    """The journal line of Confirm send (DOMAIN §1.4), as a sentence with curly quotes."""
    return _("Delivery started by user “%(who)s”.") % {"who": who(user)}


def journal_add(*, delivery, text: str, level: str = JournalEntry.Level.INFO, user=None) -> JournalEntry:
    return JournalEntry.objects.create(delivery_id=getattr(delivery, "pk", delivery), text=text, level=level, user=user)


# The KPI app's task that recomputes the figures of a send that just ended. Named, not imported:
# kpis sits above deliveries (DESIGN.md), as the pages load its partials by URL name.
SEND_ENDED_TASK = "kpis.send_ended"


def delivery_send_ended(*, delivery_id: int) -> None:
    """Call inside the transaction that ends a send (finished, failed or stopped): after commit,
    enqueue the recompute of its KPIs, so they cover the end whichever path ended it, without
    waiting for someone to open the page. Each end is one conditional update, so it is enqueued
    once. A broker that cannot take it is logged: the page or the hourly job recomputes later."""

    def enqueue() -> None:
        try:
            current_app.signature(SEND_ENDED_TASK, args=(delivery_id,)).delay()
        except Exception:
            log.exception("delivery %s: could not enqueue %s", delivery_id, SEND_ENDED_TASK)

    transaction.on_commit(enqueue)


def illegal(action: str, delivery: Delivery) -> DispatchError:
    return DispatchError(
        _("You cannot %(action)s this message while it is “%(state)s”.")
        % {"action": action, "state": State(delivery.state).label},
        code="invalid_state",
    )


def _locked(delivery) -> Delivery:
    return Delivery.objects.select_for_update().get(pk=getattr(delivery, "pk", delivery))


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


def schedule_passed(d: Delivery, now: datetime | None = None) -> bool:
    """The message was scheduled for a time that has passed since it was saved (a send at each
    recipient's time zone is not: each recipient has their own time, the dialog counts who passed)."""
    if d.send_time == SendTime.RECIPIENT_TZ:
        return False
    return d.schedule == Delivery.Schedule.AT and d.scheduled_at is not None and d.scheduled_at <= (now or clock.now())


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
    require_role(user=user, role=PREPARE_DELIVERY)
    data = _clean({**{f: getattr(delivery, f) for f in EDITABLE_FIELDS}, **data})
    with transaction.atomic():
        d = _locked(delivery)
        if d.state in STARTED_STATES:
            raise DispatchError(_("This message's send has started: it is read-only. Duplicate it to change it."), code="read_only")
        if d.state == State.PREPARING:
            raise DispatchError(_("The preparation is running: stop it before editing the message."), code="invalid_state")
        changed = [f for f in EDITABLE_FIELDS if getattr(d, f) != data[f]]
        if not changed:
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
                d.state = State.EDITING
                d.targeted_count = d.to_deliver_count = d.warnings_count = 0  # the figures of a preparation now obsolete
                journal_add(
                    delivery=d,
                    level=JournalEntry.Level.WARNING,
                    user=user,
                    text=_("Message edited by %(who)s after preparation: back to editing. Prepare it again before sending.")
                    % {"who": who(user)},
                )
        d.save()
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


ARCHIVE_DENIED = gettext_noop(
    "Archiving a sent message needs the “Prepare deliveries” and “Start deliveries” roles. Ask an administrator."
)


def delivery_delete(*, delivery, user, source: str = "page") -> None:
    """Delete a message never sent (Editing, prepared, or whose preparation failed) with its
    journal, logs and KPIs; the audit trail keeps a line saying who and what. A message whose send
    started cannot be deleted: once ended it is archived (delivery_archive)."""
    require_role(user=user, role=PREPARE_DELIVERY)
    with transaction.atomic():
        d = _locked(delivery)
        if d.state not in EDITABLE_STATES:
            if d.state in FINAL_STATES:
                raise DispatchError(
                    _("A message that was sent is not deleted: archive it to hide it from the lists (its history and KPIs are kept)."),
                    code="sent_message",
                )
            raise DispatchError(
                _("You cannot delete this message while it is “%(state)s”: stop its send first, then archive it.")
                % {"state": State(d.state).label},
                code="invalid_state",
            )
        audit_record(actor=user, action=RoleAuditLog.Action.MESSAGE_DELETED, target=str(d), source=source)
        d.delete()


def delivery_archive(*, delivery, user, source: str = "page") -> Delivery:
    """Archive a message whose send ended: hidden from the lists, kept for the profiles' history,
    fatigue counts and KPIs. Journaled, and in the audit trail."""
    if not (user_has_role(user=user, role=PREPARE_DELIVERY) and user_has_role(user=user, role=START_DELIVERY)):
        raise PermissionDenied(_(ARCHIVE_DENIED))
    with transaction.atomic():
        d = _locked(delivery)
        if d.archived_at is not None:
            raise DispatchError(_("This message is already archived."), code="already_archived")
        if d.state not in FINAL_STATES:
            raise DispatchError(
                _("Only a message whose send ended can be archived (it is “%(state)s”).") % {"state": State(d.state).label},
                code="invalid_state",
            )
        d.archived_at, d.archived_by = timezone.now(), user
        d.save(update_fields=["archived_at", "archived_by", "updated_at"])
        journal_add(delivery=d, user=user, text=_("Message archived by %(who)s.") % {"who": who(user)})
        audit_record(actor=user, action=RoleAuditLog.Action.MESSAGE_ARCHIVED, target=str(d), source=source)
    return d


# --- preparation ----------------------------------------------------------------------------
def delivery_prepare(*, delivery, user) -> Delivery:
    require_role(user=user, role=PREPARE_DELIVERY)
    with transaction.atomic():
        d = _locked(delivery)
        if d.state not in EDITABLE_STATES:
            raise illegal(_("prepare"), d)
        missing = []
        if d.audience_id is None:
            missing.append(_("an audience"))
        if not (d.html or d.text):
            missing.append(_("content"))
        if missing:
            raise DispatchError(
                _("Set %(what)s before preparing the message.") % {"what": _(" and ").join(missing)}, code="incomplete"
            )
        d.state, d.progress, d.stop_requested = State.PREPARING, 0, False
        d.targeted_count = d.to_deliver_count = d.warnings_count = 0  # this preparation replaces the last one's figures
        d.save(update_fields=["state", "progress", "stop_requested", "targeted_count", "to_deliver_count", "warnings_count", "updated_at"])
        journal_add(delivery=d, user=user, text=_("Preparation started by %(who)s.") % {"who": who(user)})
        queue.enqueue(queue.PREPARE, d.pk, after_commit=True)
    return d


def delivery_stop_preparation(*, delivery, user) -> Delivery:
    require_role(user=user, role=PREPARE_DELIVERY)
    with transaction.atomic():
        d = _locked(delivery)
        if d.state != State.PREPARING:
            raise illegal(_("stop the preparation of"), d)
        d.state, d.stop_requested, d.progress = State.EDITING, True, 0
        d.save(update_fields=["state", "stop_requested", "progress", "updated_at"])
        journal_add(delivery=d, user=user, text=_("Preparation stopped by %(who)s.") % {"who": who(user)})
    return d


# --- approval -------------------------------------------------------------------------------
def delivery_approve(*, delivery, user, part: str) -> Delivery:
    """Approve the content or the target of someone else's prepared message."""
    require_role(user=user, role=APPROVE_DELIVERY)
    if part not in ("content", "target"):
        raise InvalidInput(_("Choose what to approve: “content” or “target”."), code="invalid")
    with transaction.atomic():
        d = _locked(delivery)
        if d.state != State.READY:
            raise DispatchError(_("Only a prepared message can be approved (it is “%(state)s”).") % {"state": State(d.state).label}, code="invalid_state")
        if d.created_by_id == user.pk:
            raise DispatchError(_("You wrote this message: someone else must approve it."), code="own_message")
        if user.pk in (d.edited_since_approval or []):
            raise DispatchError(
                _("You edited this message since its last approval: someone who did not change it must approve it."),
                code="edited_by_you",
            )
        if not d.requires_approval:
            raise DispatchError(_("This message does not require approval."), code="not_required")
        setattr(d, f"{part}_approved_by", user)
        setattr(d, f"{part}_approved_at", timezone.now())
        d.edited_since_approval = []  # whoever edits from now on is the next one who cannot approve
        d.save(update_fields=[f"{part}_approved_by", f"{part}_approved_at", "edited_since_approval", "updated_at"])
        journal_add(delivery=d, user=user, text=_("%(part)s approved by %(who)s.") % {"part": _("Content") if part == "content" else _("Target"), "who": who(user)})
    return d


def is_approved(d: Delivery) -> bool:
    return not d.requires_approval or bool(d.content_approved_at and d.target_approved_at)


# --- Confirm send ---------------------------------------------------------------------------
def confirm_refusal(*, delivery, user, revision: int | None = None, check_role: bool = True) -> str | None:
    """Why `user` cannot confirm `delivery` now (None when they can). Used by the page and the
    service. Without `check_role`: why nobody could confirm it now (None: Confirm send is offered
    to whoever holds Start deliveries)."""
    if check_role and not user_has_role(user=user, role=START_DELIVERY):
        return _(CONFIRM_DENIED)
    d = delivery
    if d.state in STARTED_STATES:
        return ALREADY_CONFIRMED
    if d.state == State.PREPARING:
        return _("The preparation is still running: wait for it to finish, then confirm.")
    if d.state == State.PREPARATION_FAILED:
        return _("The preparation failed: correct the errors shown in the journal and prepare again.")
    if d.state == State.EDITING:
        return CHANGED_AFTER_PREPARATION if d.prepared_at else NOT_PREPARED
    if d.prepared_revision != d.revision or (revision is not None and int(revision) != d.revision):
        return CHANGED_AFTER_PREPARATION
    if not is_approved(d):
        parts = [p for p, at in (("content", d.content_approved_at), ("target", d.target_approved_at)) if not at]
        if len(parts) == 2:
            return _("This message needs its content and target approved by an approver before it can be sent.")
        if parts == ["content"]:
            return _("This message needs its content approved by an approver before it can be sent.")
        return _("This message needs its target approved by an approver before it can be sent.")
    return None


def delivery_confirm(*, delivery, user, revision: int | None = None, send_now: bool = False) -> Delivery:
    """Confirm send: in one transaction with the row locked, check role, state, approvals and that
    nothing changed since preparation; then start (or schedule) the send and enqueue it after commit.
    A second confirmation is refused and enqueues nothing. A message whose send time has passed
    since it was saved is refused unless `send_now` says to send it now."""
    if not user_has_role(user=user, role=START_DELIVERY):
        raise PermissionDenied(_(CONFIRM_DENIED))
    with transaction.atomic():
        d = _locked(delivery)
        reason = confirm_refusal(delivery=d, user=user, revision=revision)
        if reason:
            code = {ALREADY_CONFIRMED: "already_confirmed", CHANGED_AFTER_PREPARATION: "changed_after_preparation", NOT_PREPARED: "not_prepared"}.get(reason, "invalid_state")
            raise DispatchError(reason, code=code)
        now = clock.now()
        passed = schedule_passed(d, now)
        if passed and not send_now:
            raise DispatchError(
                _("The send time, %(when)s, has passed: send now, or edit the message to choose a later time.")
                % {"when": scheduled_text(d)},
                code="schedule_passed",
            )
        d.confirmed_by, d.confirmed_at = user, now
        journal_add(delivery=d, user=user, text=started_text(user))
        if passed:
            journal_add(
                delivery=d, user=user,
                text=_("The send time, %(when)s, had passed: sent now at the request of %(who)s.") % {"when": scheduled_text(d), "who": who(user)},
            )  # fmt: skip
        starts_at = d.first_due_at if d.send_time != SendTime.NONE else (d.scheduled_at if d.schedule == Delivery.Schedule.AT else None)
        if starts_at and starts_at > now:
            d.state = State.START_PENDING
            if d.send_time != SendTime.NONE:
                journal_add(delivery=d, user=user, text=_("Waiting for the first recipients' time: %(when)s.") % {"when": f"{starts_at:%Y-%m-%d %H:%M} UTC"})
            else:
                journal_add(delivery=d, user=user, text=_("Waiting for the scheduled date: %(when)s.") % {"when": scheduled_text(d)})
        else:
            d.state, d.started_at = State.IN_PROGRESS, now
            queue.enqueue(queue.DISPATCH, d.pk, after_commit=True)
        d.save()
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
        with transaction.atomic():
            if Delivery.objects.filter(pk=pk, state=State.START_PENDING).update(state=State.IN_PROGRESS, started_at=now):
                journal_add(delivery=pk, text=_("The scheduled time has come: sending started."))
                queue.enqueue(queue.DISPATCH, pk, after_commit=True)
                started.append(pk)
    return started


# --- pause, resume, stop --------------------------------------------------------------------
# Delivery supervisors watching an alert may pause or stop a send themselves (DOMAIN §3); resuming
# it, like confirming, stays with Start deliveries.
PAUSE_STOP_ROLES = (START_DELIVERY, MONITOR_DELIVERY)
PAUSE_DENIED = gettext_noop("Pausing a send needs the “Start deliveries” or “Monitor deliveries” role. Ask an administrator.")
STOP_DENIED = gettext_noop("Stopping a send needs the “Start deliveries” or “Monitor deliveries” role. Ask an administrator.")
RESUME_DENIED = gettext_noop("Resuming a send needs the “Start deliveries” role. Ask an administrator.")


def user_can_pause_stop(*, user) -> bool:
    return user_has_any_role(user=user, roles=PAUSE_STOP_ROLES)


def delivery_pause(*, delivery, user) -> Delivery:
    if not user_can_pause_stop(user=user):
        raise PermissionDenied(_(PAUSE_DENIED))
    with transaction.atomic():
        d = _locked(delivery)
        if d.state not in (State.IN_PROGRESS, State.RETRY_PENDING, State.RETRY_IN_PROGRESS):
            raise illegal(_("pause"), d)
        d.state = State.PAUSED
        d.save(update_fields=["state", "updated_at"])
        journal_add(delivery=d, user=user, text=_("Delivery paused by %(who)s.") % {"who": who(user)})
    return d


def delivery_resume(*, delivery, user) -> Delivery:
    if not user_has_role(user=user, role=START_DELIVERY):
        raise PermissionDenied(_(RESUME_DENIED))
    with transaction.atomic():
        d = _locked(delivery)
        if d.state != State.PAUSED:
            raise illegal(_("resume"), d)
        d.state = State.IN_PROGRESS
        d.save(update_fields=["state", "updated_at"])
        journal_add(delivery=d, user=user, text=_("Delivery resumed by %(who)s.") % {"who": who(user)})
        queue.enqueue(queue.DISPATCH, d.pk, after_commit=True)
    return d


def delivery_stop(*, delivery, user) -> Delivery:
    """Stop sending: unsent logs become cancelled (final); messages already handed over stay sent."""
    if not user_can_pause_stop(user=user):
        raise PermissionDenied(_(STOP_DENIED))
    with transaction.atomic():
        d = _locked(delivery)
        if d.state not in (State.START_PENDING, State.IN_PROGRESS, State.RETRY_PENDING, State.RETRY_IN_PROGRESS, State.PAUSED):
            raise illegal(_("stop"), d)
        now = timezone.now()
        cancelled = SendingLog.objects.filter(delivery=d, status=SendingStatus.PENDING).update(
            status=SendingStatus.CANCELLED, event_at=now, next_attempt_at=None
        )
        d.state, d.finished_at = State.STOPPED, now
        d.processed_count = F("processed_count") + cancelled
        d.save(update_fields=["state", "finished_at", "processed_count", "updated_at"])
        delivery_send_ended(delivery_id=d.pk)
        journal_add(
            delivery=d,
            user=user,
            level=JournalEntry.Level.WARNING,
            text=ngettext(
                "Delivery stopped by %(who)s: %(n)d message not sent was cancelled.",
                "Delivery stopped by %(who)s: %(n)d messages not sent were cancelled.",
                cancelled,
            )
            % {"who": who(user), "n": cancelled},
        )
    d.refresh_from_db()
    return d


RESENDABLE_STATES = (State.IN_PROGRESS, State.RETRY_PENDING, State.RETRY_IN_PROGRESS, State.PAUSED, State.FINISHED, State.FAILED)


def delivery_resend_unknown(*, delivery, user) -> Delivery:
    """Send once more the messages in an unknown state (their worker died, or the connection was
    lost after their content went out: the relay may or may not have them). An operator's choice,
    never automatic: a recipient who got the first copy gets a second. Within the validity period
    only; a finished send goes back in progress (journaled with the count)."""
    require_role(user=user, role=START_DELIVERY)
    with transaction.atomic():
        d = _locked(delivery)
        if d.state not in RESENDABLE_STATES:
            raise illegal(_("resend the messages in an unknown state of"), d)
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
        fields = ["processed_count", "updated_at"]
        if d.state in (State.FINISHED, State.FAILED, State.RETRY_PENDING):
            d.state, d.finished_at = State.IN_PROGRESS, None
            fields += ["state", "finished_at"]
        d.save(update_fields=fields)
        journal_add(
            delivery=d,
            user=user,
            level=JournalEntry.Level.WARNING,
            text=ngettext(
                "Resend of %(n)s message in an unknown state requested by %(who)s: if its recipient received the first copy, they get it twice.",
                "Resend of %(n)s messages in an unknown state requested by %(who)s: recipients who received the first copy get it twice.",
                n,
            )
            % {"n": f"{n:,}", "who": who(user)},
        )
        if d.state != State.PAUSED:
            queue.enqueue(queue.DISPATCH, d.pk, after_commit=True)
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


def delivery_alert_flag_set(*, delivery_id: int, open_alert: bool) -> None:
    """Record whether the message has an alert not yet acknowledged (shown as Warning in lists).
    Called by the ops app, which owns alerts."""
    Delivery.objects.filter(pk=delivery_id).exclude(has_open_alert=open_alert).update(has_open_alert=open_alert)
