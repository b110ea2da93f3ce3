from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from accounts.decorators import allowed
from accounts.errors import DispatchError
from accounts.roles import ROLES
from accounts.selectors import user_has_any_role
from deliveries.models import (
    FINAL_STATES,
    STARTED_STATES,
    Delivery,
    ExclusionCause,
    FailureReason,
    SendingStatus,
    State,
)
from tracking.models import TrackingLog

from . import charts, exports, selectors
from .figures import kpi_figures
from .services import COMPUTE_ROLES, kpis_compute_if_stale, kpis_compute_request

ANY_ROLE = tuple(ROLES)  # DOMAIN.md §3: any user with one of the roles reads Deployment windows
PAGE_SIZE = 50

TABS = (
    ("log", gettext_lazy("Log")),
    ("sending", gettext_lazy("Sending logs")),
    ("exclusions", gettext_lazy("Exclusion logs")),
    ("causes", gettext_lazy("Exclusion causes")),
    ("tracking", gettext_lazy("Tracking logs")),
    ("urls", gettext_lazy("Tracked URLs")),
)
# Each tab's filters: query parameter -> allowed values.
FILTERS = {
    "sending": {"status": dict(SendingStatus.choices), "reason": dict(FailureReason.choices)},
    "exclusions": {"cause": dict(ExclusionCause.choices)},
    "tracking": {
        "kind": dict(TrackingLog.Kind.choices),
        "origin": {"human": gettext_lazy("Humans"), "machine": gettext_lazy("Machines")},
    },
}
FILTER_LABELS = {
    "status": gettext_lazy("Status"),
    "reason": gettext_lazy("Reason"),
    "cause": gettext_lazy("Cause"),
    "kind": gettext_lazy("Type"),
    "origin": gettext_lazy("Origin"),
}


def _delivery(request, pk: int) -> Delivery:
    return selectors.delivery_get(pk=pk, user=request.user)


def _filters(request, tab: str) -> dict[str, str]:
    """The tab's filters from the query string; unknown values are ignored (shown as 'All')."""
    allowed = FILTERS.get(tab, {})
    return {name: request.GET.get(name, "") for name, values in allowed.items() if request.GET.get(name, "") in values}


STATUS_TEXT = {
    State.START_PENDING: (gettext_lazy("Start pending"), gettext_lazy("The send starts at the scheduled date.")),
    State.IN_PROGRESS: (
        gettext_lazy("Sending"),
        gettext_lazy("Send is being processed by the message sending service."),
    ),
    State.RETRY_PENDING: (
        gettext_lazy("Sending (retry)"),
        gettext_lazy("First pass done: soft failures are retried within the validity period."),
    ),
    State.RETRY_IN_PROGRESS: (
        gettext_lazy("Sending (retry)"),
        gettext_lazy("Soft failures are being retried by the message sending service."),
    ),
    State.PAUSED: (gettext_lazy("Paused"), gettext_lazy("Sending is paused: resume it to continue.")),
    State.STOPPED: (
        gettext_lazy("Stopped"),
        gettext_lazy("The send was stopped; messages not sent were cancelled."),
    ),
    State.FAILED: (
        gettext_lazy("Failed"),
        gettext_lazy("No message could be delivered. See the sending logs for the reasons."),
    ),
    State.FINISHED: (gettext_lazy("Finished sending"), gettext_lazy("All messages have been processed.")),
}


TAB_TARGET = "deployment-tab"  # the id of the Deployment window's tab section (swapped alone by htmx)
EMBED_TARGET = "deployment-kpis"  # the id of the element the message dashboard loads this partial into


def block_context(
    request,
    delivery: Delivery,
    *,
    notice: str = "",
    notice_level: str = "info",
    in_window: bool = False,
    embedded: bool = False,
) -> dict:
    """What the Deployment block needs: progress while sending, KPI tiles after, polling while either moves.

    `embedded`: inside the message dashboard's Deployment block, which already shows the status and
    the bar and refreshes itself (reloading this partial) while the send runs; so this part adds the
    rate, ETA and KPIs, and polls on its own only while a recompute runs.
    """
    snapshot = selectors.snapshot_of(delivery)
    computing = selectors.snapshot_is_computing(snapshot)
    started = delivery.state in STARTED_STATES
    final = delivery.state in FINAL_STATES
    title, text = STATUS_TEXT.get(delivery.state, ("", ""))
    tiles = selectors.tiles_snapshot(delivery, snapshot)
    return {
        "delivery": delivery,
        "snapshot": snapshot,
        "figures": kpi_figures(tiles),
        "tiles_live": tiles is not snapshot,
        "progress": selectors.delivery_progress(delivery=delivery),
        "started": started,
        "final": final,
        "computing": computing,
        "poll": started and (computing or (not final and not embedded)),
        "embedded": embedded,
        "poll_seconds": settings.KPI_PROGRESS_POLL_SECONDS,
        "status_title": title,
        "status_text": text,
        "notice": notice,
        "notice_level": notice_level,
        "in_window": in_window,
        "can_compute": user_has_any_role(user=request.user, roles=COMPUTE_ROLES),
    }


@allowed("read")
@require_GET
def deployment_kpis(request, pk: int):
    """The Deployment block's live part (loaded by the message dashboard, refreshed by htmx)."""
    delivery = _delivery(request, pk)
    if kpis_compute_if_stale(delivery=delivery):  # the send just ended: bring the figures up to date once
        delivery = _delivery(request, pk)
    embedded = bool(request.GET.get("embed")) or bool(request.htmx and request.htmx.target == EMBED_TARGET)
    context = block_context(request, delivery, in_window=bool(request.GET.get("window")), embedded=embedded)
    return render(request, "kpis/block.html", context)


@allowed("compute_stats")
@require_POST
def compute_stats(request, pk: int):
    delivery = _delivery(request, pk)
    notice, level = _("Computing the statistics… the figures update when it ends."), messages.SUCCESS
    try:
        kpis_compute_request(delivery=delivery, user=request.user)
    except DispatchError as error:
        notice, level = error.message, messages.WARNING
    if request.htmx:
        delivery = _delivery(request, pk)
        in_window = bool(request.POST.get("window"))
        context = block_context(
            request,
            delivery,
            notice=notice,
            notice_level="warning" if level == messages.WARNING else "info",
            in_window=in_window,
        )
        return render(request, "kpis/block.html", context)
    messages.add_message(request, level, notice)
    return redirect("kpis:deployment", pk=pk)


@allowed("read")
@require_GET
def deployment(request, pk: int):
    """The Deployment window: status, Compute stats, the KPIs, charts and the six tabs."""
    delivery = _delivery(request, pk)
    tab = request.GET.get("tab", "log")
    if tab not in dict(TABS):
        tab = "log"
    filters = _filters(request, tab)
    # A tab, a filter or a page asked by htmx: only the tab's section, swapped in place.
    tab_only = bool(request.htmx and request.htmx.target == TAB_TARGET)
    context = {"delivery": delivery} if tab_only else block_context(request, delivery, in_window=True)
    filter_rows = [
        {
            "name": name,
            "label": FILTER_LABELS[name],
            "choices": list(choices.items()),
            "selected": filters.get(name, ""),
        }
        for name, choices in FILTERS.get(tab, {}).items()
    ]
    context.update(tab=tab, tabs=TABS, filters=filters, filter_rows=filter_rows)
    query = request.GET.copy()
    query.pop("page", None)
    context["query"] = query.urlencode()
    context["csv_query"] = "&".join(f"{k}={v}" for k, v in filters.items())
    page_number = request.GET.get("page")
    if tab == "log":
        context["page"] = Paginator(selectors.journal_list(delivery=delivery), PAGE_SIZE).get_page(page_number)
    elif tab == "sending":
        logs = selectors.sending_log_list(delivery=delivery, **filters).only(
            "id",
            "profile_id",
            "event_at",
            "status",
            "address",
            "failure_type",
            "failure_reason",
            "failure_text",
            "attempts",
        )
        context["page"] = Paginator(logs, PAGE_SIZE).get_page(page_number)
    elif tab == "exclusions":
        rows = selectors.exclusion_log_list(delivery=delivery, **filters)
        context["page"] = Paginator(rows, PAGE_SIZE).get_page(page_number)
    elif tab == "causes":
        labels = dict(ExclusionCause.choices)
        causes = [
            {"label": labels.get(r["cause"], r["cause"]), **r}
            for r in selectors.exclusion_cause_counts(delivery=delivery)
        ]
        context.update(causes=causes, causes_total=sum(c["count"] for c in causes))
    elif tab == "tracking":
        rows = selectors.tracking_log_list(delivery=delivery, **filters).select_related("sending_log", "tracked_url")
        context["page"] = Paginator(rows, PAGE_SIZE).get_page(page_number)
    elif tab == "urls":
        context["urls"] = selectors.tracked_url_list(delivery=delivery)
    return render(request, "kpis/deployment.html" + ("#deployment-tab" if tab_only else ""), context)


@allowed("read")
@require_GET
def deployment_charts(request, pk: int):
    delivery = _delivery(request, pk)
    data, as_of = selectors.deployment_chart_data(delivery=delivery)
    processed = charts.processed_chart(*data["processed"], started_at=delivery.started_at)
    engagement = charts.engagement_chart(*data["engagement"])
    return render(request, "kpis/charts.html", {"delivery": delivery, "charts": [processed, engagement], "as_of": as_of})


@allowed("read")
@require_GET
def deployment_csv(request, pk: int, tab: str):
    if tab not in exports.EXPORTS:
        raise Http404(_("There is no such export: choose a tab of the Deployment window."))
    delivery = _delivery(request, pk)
    return exports.export_tab(delivery=delivery, tab=tab, filters=_filters(request, tab))
