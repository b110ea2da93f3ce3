"""The send lifecycle in one place (DOMAIN.md §2): the state table as data, who may take each
action, and the one function that applies a transition.

- `ACTIONS`: every action a person takes on a message (Prepare, Confirm send, Pause…) and every
  event of the system that moves it (its scheduled time comes, a pass ends…): the states it is
  allowed from, the state it leads to, the access it needs (a key of `accounts.roles.ACCESS`, the
  one table of who may do what), the words of its refusal and its journal line.
- `transition()`: applies an action to a message under its row lock, in one transaction: it checks
  the access and the state (raising the sentence that names the current state), lets the service
  set what the action changes, then saves the row, writes the journal line, and after the commit
  enqueues the task the new state needs (preparing: the preparation; sending: the dispatcher)
  and, when a send ends, calls `hooks.send_ended`.
- `action_refusal()`: why this user cannot take this action on this message now (None when they
  can); `deliveries.selectors.delivery_actions` (the action bar, the API's `actions`) reads it,
  and `transition()` raises it, so the buttons shown and the services always agree.

The engine (deliveries/sending.py) and preparation move a message by their own conditional
updates (a send's passes, its end): those events are in the table as data (`by_system`), so the
whole of DOMAIN.md §2 reads here, but their code stays where the work is done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from accounts.errors import DispatchError
from accounts.roles import access_denied_message
from accounts.selectors import holds_access

from . import clock, hooks, queue
from .models import (
    FINAL_STATES,
    PAUSABLE_STATES,
    STARTED_STATES,
    STOPPABLE_STATES,
    Delivery,
    JournalEntry,
    SendingLog,
    SendingStatus,
    SendTime,
    State,
)

log = logging.getLogger(__name__)

INFO, WARNING, CRITICAL = JournalEntry.Level.INFO, JournalEntry.Level.WARNING, JournalEntry.Level.CRITICAL

EDITABLE_STATES = (State.EDITING, State.READY, State.PREPARATION_FAILED)
RESENDABLE_STATES = (State.IN_PROGRESS, State.RETRY_PENDING, State.RETRY_IN_PROGRESS, State.PAUSED, State.FINISHED, State.FAILED)
ALL_STATES = tuple(State)

# The task a message's new state needs, enqueued after the commit of the transition that leaves it there.
ENQUEUE_ON = {State.PREPARING: queue.PREPARE, State.IN_PROGRESS: queue.DISPATCH, State.RETRY_IN_PROGRESS: queue.DISPATCH}

# --- the journal --------------------------------------------------------------------------------
FINISHED_TEXT = "Delivery finished (all messages have been processed)."


def who(user) -> str:
    return f"{user.get_full_name() or user.username} ({user.username})" if user else "system"


def sentence(text: str) -> str:
    """`text` ending with one full stop (or its own ?, ! or …): never none, never two."""
    text = str(text).rstrip()
    return text if text.endswith((".", "!", "?", "…")) else f"{text}."


def started_text(user) -> str:
    """The journal line of Confirm send (DOMAIN §1.4), as a sentence with curly quotes."""
    return _("Delivery started by user “%(who)s”.") % {"who": who(user)}


def journal_add(*, delivery, text: str, level: str = INFO, user=None) -> JournalEntry:
    return JournalEntry.objects.create(delivery_id=getattr(delivery, "pk", delivery), text=text, level=level, user=user)


# The end of a send, whichever path ended it: the hook deliveries owns (kpis registers to it).
delivery_send_ended = hooks.send_ended


# --- refusals -----------------------------------------------------------------------------------
CONFIRM_DENIED = gettext_noop("Confirming a send needs the “Start deliveries” role. Ask an administrator.")
PAUSE_DENIED = gettext_noop("Pausing a send needs the “Start deliveries” or “Monitor deliveries” role. Ask an administrator.")
STOP_DENIED = gettext_noop("Stopping a send needs the “Start deliveries” or “Monitor deliveries” role. Ask an administrator.")
RESUME_DENIED = gettext_noop("Resuming a send needs the “Start deliveries” role. Ask an administrator.")
ARCHIVE_DENIED = gettext_noop(
    "Archiving a sent message needs the “Prepare deliveries” and “Start deliveries” roles. Ask an administrator."
)
ALREADY_CONFIRMED = "This message has already been confirmed."
CHANGED_AFTER_PREPARATION = (
    "The sending cannot be confirmed because the message changed after preparation. "
    "Please restart the preparation."
)
NOT_PREPARED = "This message must be prepared before it can be confirmed."
CONFIRM_CODES = {ALREADY_CONFIRMED: "already_confirmed", CHANGED_AFTER_PREPARATION: "changed_after_preparation", NOT_PREPARED: "not_prepared"}


def illegal(action: str, delivery: Delivery) -> DispatchError:
    return DispatchError(
        _("You cannot %(action)s this message while it is “%(state)s”.")
        % {"action": action, "state": State(delivery.state).label},
        code="invalid_state",
    )


def is_approved(d: Delivery) -> bool:
    return not d.requires_approval or bool(d.content_approved_at and d.target_approved_at)


def confirm_refusal(*, delivery, user=None, revision: int | None = None, check_role: bool = True) -> str | None:
    """Why `user` cannot confirm `delivery` now (None when they can). Without `check_role`: why
    nobody could confirm it now (None: Confirm send is offered to whoever holds Start deliveries).
    With `revision`: the one the person reviewed, refused when the message changed since."""
    if check_role and not holds_access(user=user, action="start"):
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


def schedule_passed(d: Delivery, now: datetime | None = None) -> bool:
    """The message was scheduled for a time that has passed since it was saved (a send at each
    recipient's time zone is not: each recipient has their own time, the dialog counts who passed)."""
    if d.send_time == SendTime.RECIPIENT_TZ:
        return False
    return d.schedule == Delivery.Schedule.AT and d.scheduled_at is not None and d.scheduled_at <= (now or clock.now())


def _confirm(d: Delivery, user) -> DispatchError | None:
    reason = confirm_refusal(delivery=d, check_role=False)
    return DispatchError(reason, code=CONFIRM_CODES.get(reason, "invalid_state")) if reason else None


def _send_now(d: Delivery, user) -> DispatchError | None:
    return _confirm(d, user) or (None if schedule_passed(d) else illegal(_("send now"), d))


def _edit(d: Delivery, user) -> DispatchError | None:
    if d.state in STARTED_STATES:
        return DispatchError(_("This message's send has started: it is read-only. Duplicate it to change it."), code="read_only")
    if d.state == State.PREPARING:
        return DispatchError(_("The preparation is running: stop it before editing the message."), code="invalid_state")
    return None


def _approve(d: Delivery, user) -> DispatchError | None:
    if d.state != State.READY:
        return DispatchError(_("Only a prepared message can be approved (it is “%(state)s”).") % {"state": State(d.state).label}, code="invalid_state")
    if user is not None and d.created_by_id == user.pk:
        return DispatchError(_("You wrote this message: someone else must approve it."), code="own_message")
    if user is not None and user.pk in (d.edited_since_approval or []):
        return DispatchError(
            _("You edited this message since its last approval: someone who did not change it must approve it."), code="edited_by_you"
        )
    if not d.requires_approval:
        return DispatchError(_("This message does not require approval."), code="not_required")
    return None


def _delete(d: Delivery, user) -> DispatchError | None:
    if d.state in EDITABLE_STATES:
        return None
    if d.state in FINAL_STATES:
        return DispatchError(
            _("A message that was sent is not deleted: archive it to hide it from the lists (its history and KPIs are kept)."),
            code="sent_message",
        )
    return DispatchError(
        _("You cannot delete this message while it is “%(state)s”: stop its send first, then archive it.") % {"state": State(d.state).label},
        code="invalid_state",
    )


def _archive(d: Delivery, user) -> DispatchError | None:
    if d.archived_at is not None:
        return DispatchError(_("This message is already archived."), code="already_archived")
    if d.state not in FINAL_STATES:
        return DispatchError(
            _("Only a message whose send ended can be archived (it is “%(state)s”).") % {"state": State(d.state).label}, code="invalid_state"
        )
    return None


def has_unknown(d: Delivery) -> bool:
    """Some of its messages are in an unknown state (read from the list's annotation when there)."""
    if "has_unknown" in d.__dict__:
        return bool(d.__dict__["has_unknown"])
    return SendingLog.objects.filter(delivery_id=d.pk, status=SendingStatus.UNKNOWN).exists()


def _resend_unknown(d: Delivery, user) -> DispatchError | None:
    if d.state not in RESENDABLE_STATES:
        return illegal(_("resend the messages in an unknown state of"), d)
    if not has_unknown(d):
        return DispatchError(_("No message of this send is in an unknown state: there is nothing to resend."), code="nothing_to_resend")
    return None


# --- the table ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Action:
    """One row of the state table: `name` (as the page's and the API's URLs say it) is allowed
    from `sources` and leads to `target` (None: the state stays, or the service says which)."""

    name: str
    sources: tuple[str, ...]
    target: str | None = None
    access: str | None = None  # a key of accounts.roles.ACCESS; None: an event of the system
    verb: str = ""  # "You cannot <verb> this message while it is “<state>”."
    denied: str = ""  # the refusal of a user without the access ("": the access table's sentence)
    journal: str = ""  # the journal line, with %(who)s ("": the service writes its own)
    level: str = INFO
    refusal: Callable[[Delivery, object], DispatchError | None] | None = None  # replaces the check of `sources`
    by_system: bool = False
    note: str = field(default="", compare=False)

    def refuse(self, d: Delivery, user=None) -> DispatchError | None:
        """Why the message's current state (and facts) refuse this action (None: it may be taken)."""
        if self.refusal is not None:
            return self.refusal(d, user)
        return None if d.state in self.sources else illegal(_(self.verb), d)


N_ = gettext_noop
ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        # --- what people do (DOMAIN.md §2, and the project's own) ---
        Action("edit", EDITABLE_STATES, access="prepare", refusal=_edit,
               note="an edit of content, audience or schedule sends a prepared message back to editing"),
        Action("prepare", EDITABLE_STATES, State.PREPARING, access="prepare", verb=N_("prepare"),
               journal=N_("Preparation started by %(who)s.")),
        Action("stop-preparation", (State.PREPARING,), State.EDITING, access="prepare", verb=N_("stop the preparation of"),
               journal=N_("Preparation stopped by %(who)s.")),
        Action("approve", (State.READY,), access="approve", refusal=_approve),
        Action("confirm", (State.READY,), State.IN_PROGRESS, access="start", denied=CONFIRM_DENIED, refusal=_confirm,
               note="to start pending when its date is ahead"),
        Action("send-now", (State.READY,), State.IN_PROGRESS, access="start", denied=CONFIRM_DENIED, refusal=_send_now,
               note="Confirm send of a message whose send time passed since it was saved"),
        Action("pause", PAUSABLE_STATES, State.PAUSED, access="pause_stop", verb=N_("pause"), denied=PAUSE_DENIED,
               journal=N_("Delivery paused by %(who)s.")),
        Action("resume", (State.PAUSED,), State.IN_PROGRESS, access="start", verb=N_("resume"), denied=RESUME_DENIED,
               journal=N_("Delivery resumed by %(who)s.")),
        Action("stop", STOPPABLE_STATES, State.STOPPED, access="pause_stop", verb=N_("stop"), denied=STOP_DENIED, level=WARNING),
        Action("resend-unknown", RESENDABLE_STATES, State.IN_PROGRESS, access="start", refusal=_resend_unknown, level=WARNING,
               note="a paused send stays paused"),
        Action("duplicate", ALL_STATES, access="prepare", note="a new message in editing; this one is unchanged"),
        Action("delete", EDITABLE_STATES, access="prepare", refusal=_delete, note="the message is gone; the audit trail says who"),
        Action("archive", FINAL_STATES, access="archive", denied=ARCHIVE_DENIED, refusal=_archive,
               journal=N_("Message archived by %(who)s."), note="hidden from the lists, same state"),
        # --- what the system does ---
        Action("scheduled-time", (State.START_PENDING,), State.IN_PROGRESS, by_system=True, verb=N_("start"),
               journal=N_("The scheduled time has come: sending started.")),
        Action("preparation-end", (State.PREPARING,), State.READY, by_system=True,
               note="preparation_failed on a critical check (deliveries/services.py, preparation)"),
        Action("pass-end", (State.IN_PROGRESS, State.RETRY_IN_PROGRESS), State.FINISHED, by_system=True,
               note="retry_pending while soft failures wait, failed when every message was refused (deliveries/sending.py)"),
        Action("retry-pass", (State.RETRY_PENDING,), State.RETRY_IN_PROGRESS, by_system=True, note="deliveries/sending.py"),
        Action("autopause", (State.IN_PROGRESS, State.RETRY_IN_PROGRESS), State.PAUSED, by_system=True,
               note="bounces + errors past the hard limit (deliveries/sending.py)"),
    )
}  # fmt: skip

# What the page and the API call a user's actions (`deliveries:action` and /api/deliveries/<id>/<action>/).
USER_ACTIONS = tuple(name for name, a in ACTIONS.items() if not a.by_system)
# Who may take each action (accounts.roles.ACCESS), and the sentence refusing the others.
ACTION_ACCESS = {name: ACTIONS[name].access for name in USER_ACTIONS}
ACTION_DENIED = {name: ACTIONS[name].denied for name in USER_ACTIONS if ACTIONS[name].denied}


def may(*, user, action: str) -> bool:
    """Whether `user` holds the access `action` needs (whatever the message's state)."""
    return holds_access(user=user, action=ACTIONS[action].access)


def access_refusal(*, user, action: str) -> PermissionDenied | None:
    a = ACTIONS[action]
    if a.access is None or holds_access(user=user, action=a.access):
        return None
    return PermissionDenied(_(a.denied) if a.denied else access_denied_message(a.access))


def action_refusal(*, delivery: Delivery, user, action: str) -> Exception | None:
    """Why `user` cannot take `action` on `delivery` now: a PermissionDenied (the access) or a
    DispatchError (the state, or a fact such as who wrote it); None when they can."""
    return access_refusal(user=user, action=action) or ACTIONS[action].refuse(delivery, user)


# --- applying a transition ----------------------------------------------------------------------
class Step:
    """What a service changes inside `transition()`: set fields of `delivery` and name them in
    `save()`, add journal lines, choose another `target` state, or say `nothing()` changed."""

    def __init__(self, delivery: Delivery, action: Action, user):
        self.delivery, self.action, self.user = delivery, action, user
        self.target = action.target
        self.fields: set[str] = set()
        self.whole_row = False
        self.lines: list[tuple[str, str]] = []
        self.skip = False
        self.before = delivery.state

    def save(self, *fields: str) -> None:
        """Save these fields with the state (no field named: the whole row)."""
        if fields:
            self.fields.update(fields)
        else:
            self.whole_row = True

    def journal(self, text: str, level: str | None = None) -> None:
        self.lines.append((text, level or self.action.level))

    def nothing(self) -> None:
        """Nothing changed: nothing is saved, journaled or enqueued."""
        self.skip = True

    def _apply(self) -> None:
        if self.skip:
            return
        d, a = self.delivery, self.action
        if self.target is not None and d.state != self.target:
            d.state = self.target
            self.fields.add("state")
        if self.whole_row:
            d.save()
        elif self.fields:
            d.save(update_fields=[*sorted(self.fields), "updated_at"])
        if a.journal:
            journal_add(delivery=d, user=self.user, level=a.level, text=_(a.journal) % {"who": who(self.user)})
        for text, level in self.lines:
            journal_add(delivery=d, user=self.user, level=level, text=text)
        task = ENQUEUE_ON.get(d.state)
        if task:
            queue.enqueue(task, d.pk, after_commit=True)
        if d.state in FINAL_STATES and self.before not in FINAL_STATES:
            delivery_send_ended(delivery_id=d.pk)


def lock(delivery) -> Delivery:
    """The message's row, locked until the transaction ends (`delivery`: a message or its id)."""
    return Delivery.objects.select_for_update().get(pk=getattr(delivery, "pk", delivery))


@contextmanager
def transition(*, delivery, action: str, user=None) -> Iterator[Step]:
    """Apply `action` to `delivery` (a message or its id) under its row lock:

        with transition(delivery=d, action="pause", user=user) as step:
            ...  # step.delivery is the locked row, in a state the action is allowed from

    Raises PermissionDenied when `user` lacks the access (before anything is read), and the
    DispatchError of the table when the state (or a fact) refuses it. The body may change the row
    (naming the fields in `step.save`), add journal lines or refuse in turn (raise: nothing is
    written). Then the state is set, the row saved, the journal written, and after the commit the
    task of the new state enqueued and, when the send ended, `hooks.send_ended` called."""
    a = ACTIONS[action]
    if not a.by_system:
        denied = access_refusal(user=user, action=action)
        if denied is not None:
            raise denied
    with transaction.atomic():
        d = lock(delivery)
        refused = a.refuse(d, user)
        if refused is not None:
            raise refused
        step = Step(d, a, user)
        yield step
        step._apply()
