"""Reads of the deployment dashboard: the three lists, the totals, the chart, the alerts.

Everything here reads the deliveries' live counters, the KPI snapshots and the hourly counter
table, never the sending logs (except the Deployment block's rate: one index-only count per send in
progress, through kpis' progress selector). So the page costs a handful of queries whatever the
number of sending logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import Count, F, FloatField, Q, QuerySet, Sum
from django.db.models.functions import Cast, NullIf, Trunc
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from deliveries.models import (
    SENDING_STATES,
    STARTED_STATES,
    Delivery,
    LogicalStatus,
    SendingLog,
    State,
    logical_status_q,
)
from kpis.figures import format_count, format_rate, rate
from kpis.selectors import RATE_WINDOW, Progress, snapshot_of

from .models import Alert, ProcessedHour

PERIODS = {
    "24h": (timedelta(hours=24), _("Last 24 hours")),
    "7d": (timedelta(days=7), _("Last 7 days")),
    "30d": (timedelta(days=30), _("Last 30 days")),
}
DEFAULT_PERIOD = "7d"
RECENT_STATES = tuple(s for s in STARTED_STATES if s != State.START_PENDING)


def _ratio(numerator, denominator):
    return Cast(numerator, FloatField()) * 100.0 / NullIf(Cast(denominator, FloatField()), 0.0)


# column key -> (label, expression or field); the rates sort with messages without one last
SORTS = {
    "label": (_("Label"), F("label")),
    "owner": (_("Owner"), F("created_by__username")),
    "started": (_("Started"), F("started_at")),
    "to_deliver": (_("To deliver"), F("to_deliver_count")),
    "sent": (_("Sent"), F("sent_count") + F("failed_count")),
    "delivered": (_("Delivered"), _ratio(F("sent_count"), F("sent_count") + F("failed_count"))),
    "bounces": (_("Bounces + errors"), _ratio(F("failed_count"), F("sent_count") + F("failed_count"))),
    "open": (_("Open rate"), _ratio(F("kpis__unique_opens"), F("kpis__delivered"))),
    "click": (_("Click-through rate"), _ratio(F("kpis__unique_clicks"), F("kpis__delivered"))),
}
DEFAULT_SORT = "-started"


@dataclass(frozen=True)
class Filters:
    period: str = DEFAULT_PERIOD
    channel: str = ""
    owner: int | None = None
    status: str = ""
    sort: str = DEFAULT_SORT

    @property
    def since(self) -> datetime:
        return timezone.now() - PERIODS[self.period][0]

    @property
    def sort_key(self) -> str:
        return self.sort.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    def as_query(self, **overrides) -> dict:
        data = {
            "period": self.period,
            "channel": self.channel,
            "owner": self.owner or "",
            "status": self.status,
            "sort": self.sort,
        }
        data.update(overrides)
        return {k: v for k, v in data.items() if v not in ("", None)}


def filters_from(params) -> Filters:
    """Filters from a query string; unknown values fall back to the defaults (never an error)."""
    from deliveries.models import Channel

    period = params.get("period", "")
    channel = params.get("channel", "")
    status = params.get("status", "")
    sort = params.get("sort", "")
    owner = params.get("owner", "")
    return Filters(
        period=period if period in PERIODS else DEFAULT_PERIOD,
        channel=channel if channel in Channel.values else "",
        owner=int(owner) if owner.isdigit() else None,
        status=status if status in LogicalStatus.values else "",
        sort=sort if sort.lstrip("-") in SORTS else DEFAULT_SORT,
    )


# --- rows -------------------------------------------------------------------------------------
@dataclass
class Row:
    """A message on the dashboard with its figures, formatted once for the page and the API."""

    delivery: Delivery
    progress: Progress | None = None
    rates: dict[str, Decimal | None] = field(default_factory=dict)

    def display(self, key: str) -> str:
        return format_rate(self.rates.get(key))

    @property
    def sent_display(self) -> str:
        return self.display("sent")

    @property
    def delivered_display(self) -> str:
        return self.display("delivered")

    @property
    def bounces_display(self) -> str:
        return self.display("bounces")

    @property
    def open_display(self) -> str:
        return self.display("open")

    @property
    def click_display(self) -> str:
        return self.display("click")

    @property
    def state_label(self) -> str:
        """The state's label (cheaper than get_state_display, which rebuilds the choices each call)."""
        return State(self.delivery.state).label

    @property
    def processed(self) -> int:
        return self.delivery.sent_count + self.delivery.failed_count


def _row(d: Delivery) -> Row:
    done = d.sent_count + d.failed_count
    snap = snapshot_of(d)
    computed = snap is not None and snap.computed_at is not None
    return Row(
        delivery=d,
        rates={
            "sent": rate(done, d.to_deliver_count),
            "delivered": rate(d.sent_count, done),
            "bounces": rate(d.failed_count, done),
            "open": rate(snap.unique_opens, snap.delivered) if computed else None,
            "click": rate(snap.unique_clicks, snap.delivered) if computed else None,
        },
    )


def _base() -> QuerySet[Delivery]:
    return Delivery.objects.select_related("created_by", "kpis", "audience")


def progress_many(deliveries: list[Delivery], *, now: datetime | None = None) -> dict[int, Progress]:
    """kpis' `delivery_progress` for many sends at once: the same counters, rate and ETA, with the
    rates of every send counted by one GROUP BY over (delivery, event_at) instead of one count each
    (a test holds both equal)."""
    now = now or timezone.now()
    ids = [d.pk for d in deliveries if d.state in SENDING_STATES]
    rates = dict(
        SendingLog.objects.filter(delivery_id__in=ids, event_at__gt=now - RATE_WINDOW)
        .values_list("delivery_id")
        .annotate(n=Count("id"))
        .order_by()
    ) if ids else {}  # fmt: skip
    out = {}
    for d in deliveries:
        rate_now = rates.get(d.pk, 0)
        remaining = max(d.to_deliver_count - d.processed_count, 0)
        eta = None
        if d.state in (State.IN_PROGRESS, State.RETRY_IN_PROGRESS) and rate_now and remaining:
            eta = now + timedelta(minutes=remaining / rate_now)
        out[d.pk] = Progress(
            state=d.state,
            processed=d.processed_count,
            to_deliver=d.to_deliver_count,
            sent=d.sent_count,
            failed=d.failed_count,
            rate_per_minute=rate_now,
            eta=eta,
        )
    return out


def now_sending() -> list[Row]:
    """Every message in progress, retrying or paused, the oldest start first."""
    deliveries = list(_base().filter(state__in=SENDING_STATES).order_by("started_at", "pk"))
    progress = progress_many(deliveries)
    rows = [_row(d) for d in deliveries]
    for row in rows:
        row.progress = progress[row.delivery.pk]
    return rows


def coming_up(*, limit: int = 50) -> list[Row]:
    """Start pending messages in order of their start time."""
    qs = _base().filter(state=State.START_PENDING).order_by(F("scheduled_at").asc(nulls_last=True), "pk")[:limit]
    return [_row(d) for d in qs]


def recent_queryset(filters: Filters) -> QuerySet[Delivery]:
    """Messages whose send started or ended in the period (not start pending, not archived), filtered and sorted."""
    since = filters.since
    qs = _base().filter(state__in=RECENT_STATES, archived_at__isnull=True).filter(Q(started_at__gte=since) | Q(finished_at__gte=since))
    if filters.channel:
        qs = qs.filter(channel=filters.channel)
    if filters.owner:
        qs = qs.filter(created_by_id=filters.owner)
    if filters.status:
        qs = qs.filter(logical_status_q(filters.status))
    expression = SORTS[filters.sort_key][1]
    order = expression.desc(nulls_last=True) if filters.descending else expression.asc(nulls_last=True)
    return qs.order_by(order, "-pk")


def recently_sent(queryset) -> list[Row]:
    return [_row(d) for d in queryset]


@dataclass(frozen=True)
class Totals:
    messages: int
    recipients: int
    processed: int
    delivered: int
    bounces: int
    unique_opens: int
    unique_clicks: int
    kpi_delivered: int  # the snapshots' delivered: the denominator of the open and click rates

    @property
    def rates(self) -> dict[str, Decimal | None]:
        return {
            "delivered": rate(self.delivered, self.processed),
            "bounces": rate(self.bounces, self.processed),
            "open": rate(self.unique_opens, self.kpi_delivered),
            "click": rate(self.unique_clicks, self.kpi_delivered),
        }

    @property
    def display(self) -> dict[str, str]:
        r = self.rates
        return {
            "messages": format_count(self.messages),
            "recipients": format_count(self.recipients),
            **{k: format_rate(v) for k, v in r.items()},
        }


def totals(queryset) -> Totals:
    """One aggregate over the period's messages (counters and snapshots)."""
    agg = queryset.order_by().aggregate(
        messages=Count("pk"),
        recipients=Sum("to_deliver_count", default=0),
        delivered=Sum("sent_count", default=0),
        bounces=Sum("failed_count", default=0),
        unique_opens=Sum("kpis__unique_opens", filter=Q(kpis__computed_at__isnull=False), default=0),
        unique_clicks=Sum("kpis__unique_clicks", filter=Q(kpis__computed_at__isnull=False), default=0),
        kpi_delivered=Sum("kpis__delivered", filter=Q(kpis__computed_at__isnull=False), default=0),
    )
    return Totals(processed=agg["delivered"] + agg["bounces"], **agg)


def processed_per_hour(queryset, *, since: datetime) -> tuple[str, list[tuple[datetime, int]]]:
    """Messages processed per hour (per day beyond a week) by the period's messages, from the hourly
    counter table: (unit, [(bucket, count)]) oldest first."""
    unit = "hour" if timezone.now() - since <= timedelta(days=7, minutes=1) else "day"
    rows = (
        ProcessedHour.objects.filter(
            hour__gte=since.replace(minute=0, second=0, microsecond=0), delivery__in=queryset.order_by().values("pk")
        )
        .annotate(bucket=Trunc("hour", unit))
        .values_list("bucket")
        .annotate(n=Sum("processed"))
        .order_by("bucket")
    )
    return unit, [(b, n) for b, n in rows if n]


def owners() -> QuerySet:
    """People who own at least one message whose send started (the Owner filter)."""
    return (
        get_user_model()
        .objects.filter(pk__in=Delivery.objects.filter(state__in=STARTED_STATES).values("created_by"))
        .order_by("username")
    )


# --- alerts -----------------------------------------------------------------------------------
def alert_list(*, open_only: bool = False, delivery_id: int | None = None, criterion: str = "") -> QuerySet[Alert]:
    qs = Alert.objects.select_related("delivery", "acknowledged_by").order_by("-raised_at", "-pk")
    if open_only:
        qs = qs.filter(acknowledged_at__isnull=True)
    if delivery_id:
        qs = qs.filter(delivery_id=delivery_id)
    if criterion:
        qs = qs.filter(criterion=criterion)
    return qs


def open_alerts(*, limit: int = 50) -> list[Alert]:
    return list(alert_list(open_only=True)[:limit])


def open_alert_count() -> int:
    return Alert.objects.filter(acknowledged_at__isnull=True).count()
