"""Reads of the tracking app: a profile's message history, a message's tracking logs and tracked URLs."""

from __future__ import annotations

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from deliveries.models import SendingLog, TrackedUrl

from .models import TrackingLog

K = TrackingLog.Kind


def _count(kind_filter: Q) -> Subquery:
    """Human tracking logs of one sending log matching `kind_filter`, as a correlated count."""
    rows = (
        TrackingLog.objects.filter(kind_filter, sending_log_id=OuterRef("pk"), is_machine=False)
        .order_by()
        .values("sending_log_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), Value(0))


def profile_history(*, profile_id: int) -> QuerySet[SendingLog]:
    """Every message sent (or being sent) to the profile, newest first, with its sending status
    and the person's opens and clicks (machine hits left out)."""
    return (
        SendingLog.objects.filter(profile_id=profile_id)
        .select_related("delivery")
        .annotate(
            sent_at=Coalesce("event_at", "delivery__started_at", "delivery__created_at"),
            opens=_count(Q(kind__in=[K.OPEN, K.MIRROR])),
            clicks=_count(Q(kind=K.CLICK)),
            optouts=_count(Q(kind=K.OPTOUT)),
        )
        .order_by("-sent_at", "-id")
    )


def delivery_tracking_logs(*, delivery_id: int, kind: str = "", machine: str = "") -> QuerySet[TrackingLog]:
    """A message's tracking logs, newest first; `kind` one of TrackingLog.Kind, `machine` "human" or "machine"."""
    logs = TrackingLog.objects.filter(delivery_id=delivery_id).select_related("sending_log", "tracked_url")
    if kind in K.values:
        logs = logs.filter(kind=kind)
    if machine == "human":
        logs = logs.filter(is_machine=False)
    elif machine == "machine":
        logs = logs.filter(is_machine=True)
    return logs.order_by("-at", "-id")


def delivery_tracked_urls(*, delivery_id: int) -> list[TrackedUrl]:
    """A message's tracked URLs with clicks and unique clicks (people only; machine clicks apart),
    one GROUP BY. The opt-out and mirror-page rows count the opt-outs and mirror-page views made
    through their links (those tracking logs point at them)."""
    return list(
        TrackedUrl.objects.filter(delivery_id=delivery_id)
        .annotate(
            clicks=Count("tracking_logs", filter=Q(tracking_logs__is_machine=False)),
            unique_clicks=Count("tracking_logs__sending_log_id", filter=Q(tracking_logs__is_machine=False), distinct=True),
            machine_clicks=Count("tracking_logs", filter=Q(tracking_logs__is_machine=True)),
        )
        .order_by("id")
    )
