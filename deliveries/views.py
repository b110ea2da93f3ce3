from urllib.parse import quote, urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.formats import number_format
from django.utils.translation import gettext as _

from accounts.decorators import allowed
from accounts.errors import DispatchError
from accounts.http import safe_next
from accounts.roles import APPROVE_DELIVERY, SIGNED_IN, START_DELIVERY, access_denied_message
from accounts.selectors import holds_access, user_has_role
from audiences.models import Profile

from . import clock, lifecycle, selectors, services
from .forms import CategoryForm, DeliveryForm
from .models import SENDING_STATES, Delivery, LogicalStatus, SendingStatus, SendTime, State
from .personalization import render_message

LIVE_STATES = (State.PREPARING, State.START_PENDING, *SENDING_STATES)


def _delivery(request, pk, **kwargs) -> Delivery:
    return selectors.delivery_get(pk=pk, user=request.user, **kwargs)


@allowed("read")
def delivery_list(request):
    status, channel, search = request.GET.get("status", ""), request.GET.get("channel", ""), request.GET.get("q", "")
    archived = request.GET.get("archived") == "1"
    qs = selectors.delivery_list(status=status, channel=channel, search=search, archived=archived)
    page = Paginator(qs, 25).get_page(request.GET.get("page"))
    counts = selectors.delivery_status_counts(channel=channel, search=search)
    query = urlencode([(k, v) for k, v in (("status", status), ("channel", channel), ("q", search), ("archived", "1" if archived else "")) if v])
    # each status chip keeps the channel and search filters, so its count is the rows it lists
    keep = "".join(f"&{k}={quote(v)}" for k, v in (("channel", channel), ("q", search)) if v)
    return render(
        request,
        "deliveries/list.html",
        {"page": page, "query": query, "status": status, "channel": channel, "search": search,
         "status_counts": [(v, label, counts[v]) for v, label in LogicalStatus.choices], "statuses": LogicalStatus.choices,
         "total": counts["all"], "archived_count": counts["archived"], "archived": archived, "keep": keep},  # fmt: skip
    )


@allowed("prepare")
def delivery_create(request):
    form = DeliveryForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            d = services.delivery_create(user=request.user, data=form.service_data())
        except DispatchError as e:
            form.add_service_error(e)
        else:
            messages.success(request, _("Message %(id)s created.") % {"id": d.human_id})
            return redirect("deliveries:detail", pk=d.pk)
    return render(request, "deliveries/edit.html", {"form": form, "delivery": None}, status=400 if form.errors else 200)


@allowed("prepare")
def delivery_edit(request, pk):
    d = _delivery(request, pk)
    if d.is_read_only:
        messages.warning(request, _("This message's send has started: it is read-only. Duplicate it to change it."))
        return redirect("deliveries:detail", pk=d.pk)
    form = DeliveryForm(request.POST or None, instance=_delivery(request, pk, queryset=Delivery.objects))  # the form's own copy
    if request.method == "POST" and form.is_valid():
        try:
            services.delivery_update(delivery=d, user=request.user, data=form.service_data())
        except DispatchError as e:
            form.add_service_error(e)
        else:
            messages.success(request, _("Message saved."))
            return redirect("deliveries:detail", pk=d.pk)
    return render(request, "deliveries/edit.html", {"form": form, "delivery": d}, status=400 if form.errors else 200)


def _validity_text(seconds: float) -> str:
    hours = seconds / 3600
    if hours < 1:
        return _("%(n)d s") % {"n": seconds}
    text = _("%(h)s h") % {"h": f"{hours:g}"}
    return text + (_(" (%(d)s days)") % {"d": f"{hours / 24:g}"} if hours >= 24 else "")


def _dashboard_context(request, d: Delivery) -> dict:
    user = request.user
    actions = selectors.delivery_actions(delivery=d, user=user)  # the action bar's buttons
    can_start = lifecycle.may(user=user, action="confirm")
    refusal = lifecycle.confirm_refusal(delivery=d, check_role=False)  # why nobody could confirm it now
    ctx = {
        "d": d,
        "actions": actions,
        "live": d.state in LIVE_STATES,
        "confirm_blocked": refusal if can_start and d.state == State.READY else None,
        # only where Confirm send would be offered to someone with the role (not on drafts, not while approvals wait)
        "show_permission_banner": not can_start and refusal is None,
        "confirm_denied": _(lifecycle.CONFIRM_DENIED),
        "scheduled_text": services.scheduled_text(d) if d.scheduled_at else "",
        "schedule_passed": "send-now" in actions,
        "validity_text": _validity_text(d.validity.total_seconds()),
        "percent": int(d.processed_count * 100 / d.to_deliver_count) if d.to_deliver_count else 0,
        "STATE": State,
    }
    if d.state == State.STOPPED:
        ctx.update(_stopped_context(d))
    if "resend-unknown" in actions:
        ctx["unknown_count"] = selectors.sending_log_counts(delivery=d).get(SendingStatus.UNKNOWN, 0)
    if d.send_time != SendTime.NONE and d.prepared_at and d.state not in (State.EDITING, State.PREPARING, State.PREPARATION_FAILED):
        now = clock.now()
        ctx["plan"] = selectors.delivery_wave_plan(delivery=d, now=now)
        if "confirm" in ctx["actions"]:
            ctx["passed_count"] = selectors.delivery_due_passed(delivery=d, at=now)
    return ctx


def _stopped_context(d: Delivery) -> dict:
    """A stopped send counts its cancelled messages as processed: say what became of each message
    instead ("Stopped: 200 sent, 3,769 cancelled"), and fill the bar with the messages that went
    out (sent, failed or unknown), not with the cancelled ones."""
    counts = selectors.sending_log_counts(delivery=d)
    sent, failed = counts.get(SendingStatus.SENT, 0), counts.get(SendingStatus.FAILED, 0)
    unknown, cancelled = counts.get(SendingStatus.UNKNOWN, 0), counts.get(SendingStatus.CANCELLED, 0)
    in_flight = counts.get(SendingStatus.SENDING, 0) + counts.get(SendingStatus.PENDING, 0)

    def n(value: int) -> str:
        return number_format(value, force_grouping=True)

    parts = [_("%(n)s sent") % {"n": n(sent)}]
    if failed:
        parts.append(_("%(n)s failed") % {"n": n(failed)})
    if unknown:
        parts.append(_("%(n)s in an unknown state") % {"n": n(unknown)})
    parts.append(_("%(n)s cancelled") % {"n": n(cancelled)})
    if in_flight:
        parts.append(_("%(n)s still being sent") % {"n": n(in_flight)})
    went_out = sent + failed + unknown
    return {
        "live": bool(in_flight),  # the block refreshes until the chunks in flight at the stop are written
        "stopped_summary": _("Stopped: %(parts)s") % {"parts": ", ".join(parts)},
        "percent": went_out * 100 // d.to_deliver_count if d.to_deliver_count else 0,
    }


@allowed("read")
def delivery_detail(request, pk):
    d = _delivery(request, pk)
    ctx = _dashboard_context(request, d)
    if "confirm" in ctx["actions"]:  # the Confirm send dialog says who will be skipped (one query)
        ctx["left_since_preparation"] = selectors.delivery_left_since_preparation(delivery=d)
    samples = selectors.sample_profiles_for_preview(delivery=d)
    chosen = request.GET.get("profile")
    profile = None
    if chosen and chosen.isdigit():
        profile = Profile.objects.filter(pk=int(chosen)).first()
    profile = profile or (samples[0] if samples else None)
    preview, preview_error = None, ""
    if profile is not None and (d.html or d.text):
        try:
            preview = render_message(delivery=d, profile=profile)
        except Exception as e:  # a template error shows as such, the page still renders
            preview_error = str(e)
    ctx.update(
        samples=samples, profile=profile, preview=preview, preview_error=preview_error,
        journal=selectors.journal_list(delivery=d, limit=50),
        causes=selectors.exclusion_causes(delivery=d) if d.shows_targeted else [],
    )  # fmt: skip
    return render(request, "deliveries/detail.html", ctx)


@allowed("read")
def deployment_block(request, pk):
    d = _delivery(request, pk)
    return render(request, "deliveries/detail.html#deployment-block", _dashboard_context(request, d))


def _act(request, pk, action, success: str, **kwargs):
    d = _delivery(request, pk)
    try:
        action(delivery=d, user=request.user, **kwargs)
    except DispatchError as e:
        messages.error(request, e.message)
    except PermissionDenied as e:
        raise PermissionDenied(str(e)) from e
    else:
        messages.success(request, success)
    # Pause and Stop sending are also on the deployment dashboard and the alerts: back to where they were
    return redirect(safe_next(request, reverse("deliveries:detail", args=[pk])))


# What each button of the action bar needs (accounts.roles.ACCESS) and the sentence refusing the
# others: the state table's (deliveries.lifecycle), the same as the API's.
ACTION_ACCESS = {name: access for name, access in lifecycle.ACTION_ACCESS.items() if name not in ("edit", "send-now")}
ACTION_DENIED = lifecycle.ACTION_DENIED


@login_required
def delivery_action(request, pk, action):
    """Every button of the action bar posts here; the access table decides who may, then the
    service checks role and state again."""
    access = ACTION_ACCESS.get(action, "read")
    if not holds_access(user=request.user, action=access):
        raise PermissionDenied(_(ACTION_DENIED[action]) if action in ACTION_DENIED else access_denied_message(access))
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if action == "prepare":
        return _act(request, pk, services.delivery_prepare, _("Preparation started."))
    if action == "stop-preparation":
        return _act(request, pk, services.delivery_stop_preparation, _("Preparation stopped."))
    if action == "confirm":
        revision = request.POST.get("revision")
        revision = int(revision) if revision and revision.isdigit() else None
        send_now = request.POST.get("send_now") == "1"
        return _act(request, pk, services.delivery_confirm, _("Send confirmed."), revision=revision, send_now=send_now)
    if action == "pause":
        return _act(request, pk, services.delivery_pause, _("Sending paused."))
    if action == "resume":
        return _act(request, pk, services.delivery_resume, _("Sending resumed."))
    if action == "stop":
        return _act(request, pk, services.delivery_stop, _("Sending stopped."))
    if action == "resend-unknown":
        return _act(request, pk, services.delivery_resend_unknown, _("The messages in an unknown state are sent again."))
    if action == "approve":
        part = request.POST.get("part", "")
        return _act(request, pk, services.delivery_approve, _("Approved."), part=part)
    if action == "duplicate":
        d = _delivery(request, pk)
        try:
            copy = services.delivery_duplicate(delivery=d, user=request.user)
        except PermissionDenied as e:
            raise PermissionDenied(str(e)) from e
        messages.success(request, _("Duplicated as %(id)s.") % {"id": copy.human_id})
        return redirect("deliveries:edit", pk=copy.pk)
    if action == "archive":
        return _act(request, pk, services.delivery_archive, _("Message archived: it no longer shows in the lists; its history and KPIs are kept."))
    if action == "delete":
        d = _delivery(request, pk)
        label = str(d)
        try:
            services.delivery_delete(delivery=d, user=request.user)
        except DispatchError as e:
            messages.error(request, e.message)
            return redirect("deliveries:detail", pk=pk)
        except PermissionDenied as e:
            raise PermissionDenied(str(e)) from e
        messages.success(request, _("Message %(message)s deleted.") % {"message": label})
        return redirect("deliveries:list")
    raise Http404(_("Unknown action."))


@allowed(SIGNED_IN)
def waiting_for_me(request):
    """The home page's "Waiting for you" part (loaded by htmx): messages to approve or to confirm."""
    waiting = selectors.deliveries_waiting_for(user=request.user)
    return render(
        request,
        "deliveries/_waiting.html",
        {
            **waiting,
            "can_approve": user_has_role(user=request.user, role=APPROVE_DELIVERY),
            "can_start": user_has_role(user=request.user, role=START_DELIVERY),
        },
    )


@allowed("administer")
def categories(request):
    """Message categories and whether their messages need approval (Administration), journaled."""
    form = CategoryForm(request.POST or None)
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            if action == "policy":
                services.approval_policy_set(user=request.user, require_for_all=request.POST.get("require_for_all") == "on")
                messages.success(request, _("Approval policy saved."))
                return redirect("deliveries:categories")
            if action == "approval":
                category = get_object_or_404(selectors.category_list(), pk=request.POST.get("category") if (request.POST.get("category") or "").isdigit() else 0)
                services.category_update(user=request.user, category=category, requires_approval=request.POST.get("requires_approval") == "on")
                messages.success(request, _("Category “%(name)s” saved.") % {"name": category.name})
                return redirect("deliveries:categories")
            if form.is_valid():
                category = services.category_create(user=request.user, **form.cleaned_data)
                messages.success(request, _("Category “%(name)s” created.") % {"name": category.name})
                return redirect("deliveries:categories")
        except DispatchError as e:
            form.add_error(None, e.message)
    return render(
        request,
        "deliveries/categories.html",
        {
            "form": form,
            "categories": selectors.category_list(),
            "policy": services.approval_policy_get(),
            "changes": selectors.approval_policy_changes(),
        },
        status=400 if form.errors else 200,
    )


delivery_action.access = ACTION_ACCESS  # per action (the permission test reads it)
