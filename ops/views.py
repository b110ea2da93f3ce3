"""The deployment dashboard, the system health part, alert acknowledgement, the message's alerts
partial and the thresholds page. Thin: selectors read, services write."""

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.decorators import allowed
from accounts.errors import DispatchError, InvalidInput
from accounts.http import safe_next
from accounts.roles import ADMINISTRATION, ROLES
from accounts.selectors import user_has_any_role
from deliveries.models import SENDING_STATES, Channel, Delivery, LogicalStatus
from deliveries.selectors import delivery_get
from deliveries.services import sending_policy_get, user_can_pause_stop

from . import charts, selectors
from .forms import ThresholdsForm
from .health import system_health
from .models import Criterion
from .services import MONITOR_ROLES, alert_acknowledge, thresholds_get, thresholds_update

PAGE_SIZE = 25  # Recently sent, per page
ALERTS_ON_DASHBOARD = 10  # the newest open alerts; the alerts page lists them all
ALERT_STATUSES = {"open": _lazy("Open"), "acknowledged": _lazy("Acknowledged"), "all": _lazy("All")}
ANY_ROLE = tuple(ROLES)


def _live_context(request) -> dict:
    return {
        "now_sending": selectors.now_sending(),
        "coming_up": selectors.coming_up(),
        "alerts": selectors.open_alerts(limit=ALERTS_ON_DASHBOARD),
        "open_alert_count": selectors.open_alert_count(),
        "poll_seconds": settings.OPS_DASHBOARD_POLL_SECONDS,
        "can_acknowledge": user_has_any_role(user=request.user, roles=MONITOR_ROLES),
        "can_pause_stop": user_can_pause_stop(user=request.user),
        "back": reverse("ops:dashboard"),
    }


def _sort_headers(filters: selectors.Filters) -> list[dict]:
    """Each sortable column: its label, the link that sorts by it (toggling the direction), and aria-sort."""
    headers = []
    for key, (label, _expr) in selectors.SORTS.items():
        active = filters.sort_key == key
        descending_first = key not in ("label", "owner")
        if active:
            next_sort = key if filters.descending else f"-{key}"
        else:
            next_sort = f"-{key}" if descending_first else key
        headers.append(
            {
                "key": key,
                "label": label,
                "url": "?" + urlencode(filters.as_query(sort=next_sort)) + "#recent",
                "aria_sort": ("descending" if filters.descending else "ascending") if active else "none",
                "arrow": ("▼" if filters.descending else "▲") if active else "",
                "num": key not in ("label", "owner", "started"),
            }
        )
    return headers


@allowed("monitor")
@require_GET
def dashboard(request):
    """The deployment dashboard: now sending, coming up, recently sent, totals, alerts, system health."""
    if request.htmx and request.GET.get("part") == "live":
        return render(request, "ops/dashboard.html#live", _live_context(request))
    filters = selectors.filters_from(request.GET)
    recent = selectors.recent_queryset(filters)
    page = Paginator(recent, PAGE_SIZE).get_page(request.GET.get("page"))
    unit, hours = selectors.processed_per_hour(recent, since=filters.since)
    context = {
        **_live_context(request),
        "filters": filters,
        "page": page,
        "recent_rows": selectors.recently_sent(page.object_list),
        "query": urlencode(filters.as_query()),
        "totals": selectors.totals(recent),
        "chart": charts.processed_per_hour_chart(unit, hours, since=filters.since),
        "periods": [(key, label) for key, (_d, label) in selectors.PERIODS.items()],
        "channels": Channel.choices,
        "statuses": LogicalStatus.choices,
        "owners": selectors.owners(),
        "headers": _sort_headers(filters),
        "can_edit_thresholds": user_has_any_role(user=request.user, roles=(ADMINISTRATION,)),
    }
    return render(request, "ops/dashboard.html", context)


@allowed("monitor")
@require_GET
def health(request):
    """The system health part of the dashboard (loaded after the page, refreshed every 30 s)."""
    return render(request, "ops/health.html", {"health": system_health()})


@allowed("monitor")
@require_GET
def alerts(request):
    """Every alert, newest first: open, acknowledged or all, by criterion."""
    status = request.GET.get("status", "open")
    status = status if status in ALERT_STATUSES else "open"
    criterion = request.GET.get("criterion", "")
    criterion = criterion if criterion in Criterion.values else ""
    qs = selectors.alert_list(open_only=status == "open", criterion=criterion)
    if status == "acknowledged":
        qs = qs.filter(acknowledged_at__isnull=False)
    query = urlencode({k: v for k, v in {"status": status, "criterion": criterion}.items() if v})
    return render(
        request,
        "ops/alerts.html",
        {
            "page": Paginator(qs, 50).get_page(request.GET.get("page")),
            "query": query,
            "status": status,
            "criterion": criterion,
            "statuses": list(ALERT_STATUSES.items()),
            "criteria": Criterion.choices,
            "can_acknowledge": user_has_any_role(user=request.user, roles=MONITOR_ROLES),
            "can_pause_stop": user_can_pause_stop(user=request.user),
            "back": request.get_full_path(),
        },
    )




@allowed("monitor")
@require_POST
def acknowledge(request, pk: int):
    """Acknowledge an alert; htmx gets back the part the button was in."""
    notice, level = "", "info"
    try:
        alert = alert_acknowledge(alert=pk, user=request.user)
        notice = _("Alert acknowledged: %(criterion)s on %(label)s (DM%(id)s).") % {
            "criterion": alert.get_criterion_display(), "label": alert.delivery.label, "id": alert.delivery_id,
        }  # fmt: skip
    except DispatchError as e:
        notice, level = e.message, "warning"
    if request.htmx:
        where = request.POST.get("from", "")
        if where.isdigit():
            return _delivery_alerts_response(request, int(where), notice=notice, notice_level=level)
        return render(
            request, "ops/dashboard.html#live", {**_live_context(request), "notice": notice, "notice_level": level}
        )
    (messages.success if level == "info" else messages.warning)(request, notice)
    return redirect(safe_next(request, reverse("ops:dashboard") + "#alerts"))


def _delivery_alerts_response(request, pk: int, *, notice: str = "", notice_level: str = "info"):
    delivery = delivery_get(pk=pk, user=request.user, queryset=Delivery.objects.only("id", "label", "state"))
    alerts = list(selectors.alert_list(delivery_id=pk)[:20])
    return render(
        request,
        "ops/delivery_alerts.html",
        {
            "delivery": delivery,
            "alerts": alerts,
            "open_count": sum(1 for a in alerts if a.is_open),
            "can_acknowledge": user_has_any_role(user=request.user, roles=MONITOR_ROLES),
            "poll": delivery.state in SENDING_STATES,
            # where a plain (non-htmx) acknowledgement returns: the page showing this part
            "next_url": (request.htmx.current_url_abs_path if request.htmx else "")
            or reverse("deliveries:detail", args=[pk]),
            "notice": notice,
            "notice_level": notice_level,
        },
    )


@allowed("read")
@require_GET
def delivery_alerts(request, pk: int):
    """The message's alerts (loaded by the message dashboard by URL name `ops:delivery-alerts`)."""
    return _delivery_alerts_response(request, pk)


@allowed("administer")
@require_http_methods(["GET", "POST"])
def thresholds(request):
    """Alert thresholds and the auto-pause limit (Administration)."""
    current, policy = thresholds_get(), sending_policy_get()
    form = ThresholdsForm(request.POST or None, thresholds=current, policy=policy)
    if request.method == "POST" and form.is_valid():
        try:
            thresholds_update(user=request.user, **form.service_kwargs())
        except InvalidInput as e:
            form.add_error(None, e.message)
        else:
            messages.success(request, _("Thresholds saved: the next alert check uses them."))
            return redirect("ops:thresholds")
    return render(request, "ops/thresholds.html", {"form": form, "thresholds": current, "policy": policy})
