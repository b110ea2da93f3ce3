from django.conf import settings
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from accounts.errors import NotFound
from accounts.selectors import require_access

from .lifecycle import ACTIONS, USER_ACTIONS, action_refusal
from .models import (
    Delivery,
    JournalEntry,
    LogicalStatus,
    SendingLog,
    SendingStatus,
    State,
    logical_status_q,
    with_approval,
)


def with_actions(queryset):
    """Messages with what `delivery_actions` reads, in the same query: whether approval is needed,
    and whether some of their messages are in an unknown state (Resend unknown)."""
    unknown = SendingLog.objects.filter(delivery=OuterRef("pk"), status=SendingStatus.UNKNOWN)
    return with_approval(queryset).annotate(has_unknown=Exists(unknown))


def delivery_actions(*, delivery, user, among=USER_ACTIONS) -> set[str]:
    """What `user` may do to `delivery` now (the state table and access of deliveries.lifecycle),
    of the actions `among` (all by default): the action bar shows these buttons, the API lists
    them, and the services refuse the others with a sentence. No query for a message fetched by
    `delivery_get` or `delivery_list` (pause and stop never need one)."""
    return {name for name in among if action_refusal(delivery=delivery, user=user, action=name) is None}


def delivery_state_allows(*, delivery, action: str) -> bool:
    """Whether the message's state allows `action` now, whoever asks (e.g. "stop")."""
    return ACTIONS[action].refuse(delivery) is None


def _filtered(qs: QuerySet[Delivery], *, channel: str = "", search: str = "") -> QuerySet[Delivery]:
    if channel:
        qs = qs.filter(channel=channel)
    if search:
        s = search.strip()
        if s.upper().startswith("DM") and s[2:].isdigit():
            qs = qs.filter(pk=int(s[2:]))
        else:
            qs = qs.filter(label__icontains=s)
    return qs


def delivery_list(*, status: str = "", channel: str = "", search: str = "", archived: bool = False) -> QuerySet[Delivery]:
    """Messages, newest first, filtered by logical status, channel and label/ID. Archived messages
    are left out (or listed alone with `archived`)."""
    # The list's mini KPIs come from kpis (its template tag reads the page's snapshots in one query).
    qs = with_actions(Delivery.objects.select_related("audience", "created_by")).filter(archived_at__isnull=not archived)
    if status in LogicalStatus.values:
        qs = qs.filter(logical_status_q(status))
    return _filtered(qs, channel=channel, search=search).order_by("-id")


def delivery_status_counts(*, channel: str = "", search: str = "") -> dict[str, int]:
    """How many messages per logical status, with the same channel and search filters as the list
    (one query); "all" is their total; "archived" those hidden from it."""
    listed = Q(archived_at__isnull=True)
    counts = {s.value: Count("id", filter=logical_status_q(s.value) & listed) for s in LogicalStatus}
    return _filtered(Delivery.objects.all(), channel=channel, search=search).aggregate(
        all=Count("id", filter=listed), archived=Count("id", filter=~listed), **counts
    )


MESSAGE_NOT_FOUND = gettext_noop("There is no message DM%(pk)s: it may have been deleted.")


def delivery_get(*, pk, user, queryset=None) -> Delivery:
    """The message `pk`, for `user`: the one fetch of a message by the pages, the API and the
    partials (of every app). PermissionDenied unless `user` may read messages (any role); NotFound
    (a 404 saying "There is no message DM<pk>…") when there is none. `queryset`: the caller's own
    choice of columns and joins (the same check and sentence); by default, what the message page
    and `delivery_actions` read, in one query."""
    require_access(user=user, action="read")
    if queryset is None:
        queryset = with_actions(Delivery.objects).select_related(
            "audience", "category", "created_by", "updated_by", "confirmed_by", "content_approved_by", "target_approved_by", "archived_by"
        )
    try:
        return queryset.get(pk=pk)
    except Delivery.DoesNotExist:
        raise NotFound(_(MESSAGE_NOT_FOUND) % {"pk": pk}) from None


def journal_list(*, delivery, limit: int | None = 100) -> QuerySet[JournalEntry]:
    qs = JournalEntry.objects.filter(delivery=delivery).select_related("user").order_by("-at", "-id")
    return qs[:limit] if limit else qs


def exclusion_causes(*, delivery) -> list[dict]:
    from .models import ExclusionCause, ExclusionLog

    rows = ExclusionLog.objects.filter(delivery=delivery).values("cause").annotate(n=Count("id")).order_by("-n")
    return [{"cause": r["cause"], "label": ExclusionCause(r["cause"]).label, "count": r["n"]} for r in rows]


def sending_log_counts(*, delivery) -> dict[str, int]:
    return dict(
        SendingLog.objects.filter(delivery=delivery).values_list("status").annotate(n=Count("id")).values_list("status", "n")
    )


def sending_logs(*, delivery, status: str = "", reason: str = "") -> QuerySet[SendingLog]:
    qs = SendingLog.objects.filter(delivery=delivery)
    if status:
        qs = qs.filter(status=status)
    if reason:
        qs = qs.filter(failure_reason=reason)
    return qs.order_by("id")


def exclusion_logs(*, delivery, cause: str = ""):
    from .models import ExclusionLog

    qs = ExclusionLog.objects.filter(delivery=delivery)
    if cause:
        qs = qs.filter(cause=cause)
    return qs.order_by("id")


def sample_profiles_for_preview(*, delivery, limit: int = 20):
    from audiences.selectors import audience_profiles

    if delivery.audience_id is None:
        return []
    return list(audience_profiles(audience=delivery.audience).exclude(Q(email="")).order_by("id")[:limit])


def deliveries_waiting_for(*, user, limit: int = 20) -> dict[str, list[Delivery]]:
    """What waits for this person, oldest preparation first: prepared messages to approve (for an
    approver; never their own) and prepared, approved messages to confirm (Start deliveries)."""
    from accounts.roles import APPROVE_DELIVERY, START_DELIVERY
    from accounts.selectors import user_has_role

    ready = (
        Delivery.objects.filter(state=State.READY, prepared_revision=F("revision"))
        .select_related("audience", "created_by")
        .order_by("prepared_at", "id")
    )
    from .models import approval_required_for_all

    fully_approved = Q(content_approved_at__isnull=False, target_approved_at__isnull=False)
    approved = fully_approved if approval_required_for_all() else Q(category__requires_approval=False) | fully_approved
    waiting = {"to_approve": [], "to_confirm": []}
    if user_has_role(user=user, role=APPROVE_DELIVERY):
        waiting["to_approve"] = list(ready.exclude(approved).exclude(created_by=user)[:limit])
    if user_has_role(user=user, role=START_DELIVERY):
        waiting["to_confirm"] = list(ready.filter(approved)[:limit])
    return waiting


def delivery_left_since_preparation_by_cause(*, delivery) -> dict[str, int]:
    """Recipients not sent yet who, since preparation, were deleted, unsubscribed, denylisted or
    quarantined: the sender will skip them ({exclusion cause: count}, one query)."""
    from .consent import left_since_preparation

    return left_since_preparation(delivery=delivery)


def delivery_left_since_preparation(*, delivery) -> int:
    """How many recipients not sent yet left since preparation (the Confirm send dialog says so)."""
    return sum(delivery_left_since_preparation_by_cause(delivery=delivery).values())


def category_list():
    from .models import MessageCategory

    return MessageCategory.objects.annotate(messages=Count("deliveries")).order_by("name")


def approval_policy_changes(*, limit: int = 50):
    from .models import ApprovalPolicyChange

    return ApprovalPolicyChange.objects.select_related("actor")[:limit]


def delivery_wave_plan(*, delivery, now) -> dict:
    """A send per recipient's time: recipients per due hour, waves due, the next one (one GROUP BY)."""
    from .waves import wave_plan

    return wave_plan(delivery=delivery, now=now)


def delivery_due_passed(*, delivery, at) -> int:
    """Recipients whose own send time is already past at `at`: confirmed now, they get it at once."""
    from .waves import passed_before

    return passed_before(delivery=delivery, at=at)


def sending_policy_get():
    """The site's sending guards: the stored row, or the defaults from settings."""
    from .models import SendingPolicy

    row = SendingPolicy.objects.order_by("pk").first()
    if row is None:
        row = SendingPolicy(
            autopause_bounce_rate=float(getattr(settings, "AUTOPAUSE_BOUNCE_RATE", 0.2)),
            autopause_min_processed=int(getattr(settings, "AUTOPAUSE_MIN_PROCESSED", 500)),
        )
    return row
