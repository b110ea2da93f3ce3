from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts.csvfiles import stream_csv
from accounts.decorators import allowed
from accounts.errors import DispatchError
from accounts.http import safe_next
from accounts.roles import ACCESS
from accounts.selectors import user_has_any_role

from . import forms, selectors, services
from .conditions import conditions_clean, conditions_describe, empty_conditions
from .models import Audience, ImportRejection, Quarantine, QuarantineChange

PAGE_SIZE = 50




def _page(request, queryset, per_page=PAGE_SIZE):
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


# --- profiles ------------------------------------------------------------------------------------


@allowed("read")
def profile_list(request):
    search = request.GET.get("q", "").strip()
    page = _page(request, selectors.profile_list(search=search))
    return render(
        request,
        "audiences/profile_list.html",
        {"page": page, "search": search, "query": urlencode({"q": search}) if search else ""},
    )


@allowed("read")
def profile_detail(request, pk: int):
    profile = selectors.profile_get(pk=pk, user=request.user)
    quarantine = selectors.quarantine_status_of(addresses=[profile.email], channel="email") if profile.email else {}
    return render(
        request,
        "audiences/profile_detail.html",
        {
            "profile": profile,
            "audiences": selectors.profile_audiences(profile=profile),
            "quarantine_status": Quarantine.Status(quarantine[profile.email_key]).label if quarantine else "",
            "consent_changes": profile.consent_changes.select_related("actor")[:20],
        },
    )


def _profile_form_page(request, *, profile=None):
    can_resubscribe = user_has_any_role(user=request.user, roles=ACCESS["administer"])
    if request.method == "POST":
        form = forms.ProfileForm(request.POST, initial=forms.ProfileForm.initial_for(profile) if profile else None)
        form.limit_for(profile=profile, can_resubscribe=can_resubscribe)
        if form.is_valid():
            try:
                if profile is None:
                    profile = services.profile_create(user=request.user, **form.cleaned_data)
                    messages.success(request, _("Profile %(p)s created.") % {"p": profile})
                else:
                    services.profile_update(user=request.user, profile=profile, **form.cleaned_data)  # audits the flags
                    messages.success(request, _("Profile %(p)s saved.") % {"p": profile})
                return redirect("audiences:profile-detail", pk=profile.pk)
            except DispatchError as e:
                fields = getattr(e, "fields", None) or {}
                for name, message in fields.items():
                    form.add_error(name if name in form.fields else None, message)
                if not fields:
                    form.add_error(None, e.message)
    else:
        form = forms.ProfileForm(initial=forms.ProfileForm.initial_for(profile) if profile else None)
        form.limit_for(profile=profile, can_resubscribe=can_resubscribe)
    return render(request, "audiences/profile_form.html", {"form": form, "profile": profile},
                  status=400 if form.errors else 200)


@allowed("prepare")
def profile_create(request):
    return _profile_form_page(request)


@allowed("prepare")
def profile_edit(request, pk: int):
    return _profile_form_page(request, profile=selectors.profile_get(pk=pk, user=request.user))


# --- audiences -----------------------------------------------------------------------------------


@allowed("read")
def audience_list(request):
    audiences = list(selectors.audience_list())
    filter_counts = selectors.filter_audience_counts(audiences=audiences)
    for a in audiences:
        a.summary = conditions_describe(a.conditions) if a.kind == Audience.Kind.FILTER else ""
        if a.kind == Audience.Kind.FILTER:
            a.member_count = filter_counts.get(a.pk)
    return render(request, "audiences/audience_list.html", {"audiences": audiences})


@allowed("read")
def audience_detail(request, pk: int):
    audience = selectors.audience_get(pk=pk, user=request.user)
    members = None
    if audience.kind == Audience.Kind.LIST:
        members = _page(request, selectors.audience_profiles(audience=audience).order_by("email_key", "id"))
    return render(
        request,
        "audiences/audience_detail.html",
        {
            "audience": audience,
            "size": selectors.audience_count(audience=audience),
            "sample": selectors.audience_sample(audience=audience) if members is None else None,
            "members": members,
            "page": members,
            "summary": conditions_describe(audience.conditions) if audience.kind == Audience.Kind.FILTER else "",
            "members_form": forms.MembersForm(),
            "imports": audience.imports.order_by("-created_at")[:5],
        },
    )


@allowed("prepare")
def audience_create(request):
    form = forms.AudienceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            audience = services.audience_create(
                user=request.user, name=data["name"], kind=data["kind"], description=data["description"],
                conditions=empty_conditions(),
            )
        except DispatchError as e:
            form.add_error(None, e.message)
        else:
            messages.success(request, _("Audience “%(name)s” created.") % {"name": audience.name})
            if audience.kind == Audience.Kind.FILTER:
                return redirect("audiences:audience-edit", pk=audience.pk)
            return redirect("audiences:audience-detail", pk=audience.pk)
    return render(request, "audiences/audience_create.html", {"form": form}, status=400 if form.errors else 200)


def _builder_context(builder):
    builder = forms.builder_decorate(builder)
    try:
        count = selectors.conditions_count(conditions=forms.builder_to_tree(builder))
        error = ""
    except DispatchError as e:
        count, error = None, e.message
    return {"builder": builder, "count": count, "count_error": error, "field_choices": forms.field_choices()}


@allowed("prepare")
def audience_edit(request, pk: int):
    audience = selectors.audience_get(pk=pk, user=request.user)
    is_filter = audience.kind == Audience.Kind.FILTER
    builder = forms.builder_rows_from_tree(conditions_clean(audience.conditions)) if is_filter else None
    form = forms.AudienceForm(
        request.POST or None,
        initial={"name": audience.name, "description": audience.description, "kind": audience.kind},
    )
    form.fields["kind"].required = False
    form.fields["kind"].disabled = True
    if request.method == "POST" and is_filter:
        builder = forms.builder_from_post(request.POST)
        action = request.POST.get("action", "save")
        if action != "save":  # a builder button without JavaScript: redisplay with the change
            forms.builder_apply(builder, action)
            form = forms.AudienceForm(
                initial={"name": request.POST.get("name", ""), "description": request.POST.get("description", ""),
                         "kind": audience.kind}
            )
            return render(request, "audiences/audience_edit.html",
                          {"audience": audience, "form": form, **_builder_context(builder)})
    if request.method == "POST" and form.is_valid():
        try:
            services.audience_update(
                user=request.user, audience=audience, name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                conditions=forms.builder_to_tree(builder) if is_filter else None,
            )
        except DispatchError as e:
            form.add_error(None, e.message)
        else:
            messages.success(request, _("Audience “%(name)s” saved.") % {"name": audience.name})
            return redirect("audiences:audience-detail", pk=audience.pk)
    context = {"audience": audience, "form": form, "too_deep": is_filter and builder is None}
    if is_filter and builder is not None:
        context.update(_builder_context(builder))
    elif is_filter:
        context["summary"] = conditions_describe(audience.conditions)
    return render(request, "audiences/audience_edit.html", context, status=400 if form.errors else 200)


@allowed("prepare")
@require_POST
def conditions_builder(request):
    """htmx: the condition builder after a change (a field, an added or removed row) with its count."""
    builder = forms.builder_from_post(request.POST)
    forms.builder_apply(builder, request.POST.get("action", ""))
    return render(request, "audiences/audience_edit.html#builder", _builder_context(builder))


@allowed("prepare")
@require_POST
def conditions_count(request):
    """htmx: the live count of profiles matching the builder's current conditions."""
    return render(request, "audiences/audience_edit.html#count", _builder_context(forms.builder_from_post(request.POST)))


@allowed("prepare")
@require_POST
def audience_delete(request, pk: int):
    audience = selectors.audience_get(pk=pk, user=request.user)
    try:
        services.audience_delete(user=request.user, audience=audience)
    except DispatchError as e:
        messages.error(request, e.message)
        return redirect("audiences:audience-detail", pk=pk)
    messages.success(request, _("Audience “%(name)s” deleted.") % {"name": audience.name})
    return redirect("audiences:audience-list")


@allowed("prepare")
@require_POST
def audience_members_add(request, pk: int):
    audience = selectors.audience_get(pk=pk, user=request.user)
    form = forms.MembersForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Write at least one email address to add."))
    else:
        try:
            added = services.audience_members_add(user=request.user, audience=audience, emails=form.cleaned_data["emails"])
        except DispatchError as e:
            messages.error(request, e.message)
        else:
            messages.success(request, _("%(n)d profile(s) added.") % {"n": added})
    return redirect("audiences:audience-detail", pk=pk)


@allowed("prepare")
@require_POST
def audience_members_remove(request, pk: int, profile_pk: int):
    audience = selectors.audience_get(pk=pk, user=request.user)
    try:
        removed = services.audience_members_remove(user=request.user, audience=audience, profile_ids=[profile_pk])
    except DispatchError as e:
        messages.error(request, e.message)
    else:
        if removed:
            messages.success(request, _("Profile removed from “%(name)s”.") % {"name": audience.name})
    return redirect(safe_next(request, reverse("audiences:audience-detail", args=[pk])))


# --- imports -------------------------------------------------------------------------------------


@allowed("import")
def import_create(request):
    initial = {}
    audience = request.GET.get("audience", "")
    if audience.isdigit():  # anything else is ignored (the form offers the lists)
        initial["audience"] = Audience.objects.filter(pk=int(audience), kind=Audience.Kind.LIST).first()
    form = forms.ImportForm(request.POST or None, request.FILES or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            job = services.import_create(user=request.user, uploaded=form.cleaned_data["file"], audience=form.cleaned_data["audience"])
        except DispatchError as e:
            form.add_error("file", e.message)
        else:
            return redirect("audiences:import-detail", pk=job.pk)
    return render(
        request,
        "audiences/import_form.html",
        {"form": form, "recent": selectors.import_list()[:10]},
        status=400 if form.errors else 200,
    )


@allowed("read")
def import_detail(request, pk: int):
    job = selectors.import_get(pk=pk, user=request.user)
    rejections = _page(request, job.rejections.all())
    polling = request.htmx and not request.GET.get("page")
    response = render(request, "audiences/import_detail.html" + ("#progress" if polling else ""), {"job": job, "page": rejections})
    if polling and not job.is_active:
        response["HX-Refresh"] = "true"  # finished: reload the whole page, with the rejected rows
    return response


@allowed("read")
def import_rejections_csv(request, pk: int):
    job = selectors.import_get(pk=pk, user=request.user)
    rows = (
        [r.line, r.column, r.value, r.reason]
        for r in ImportRejection.objects.filter(job=job).order_by("line", "id").iterator(chunk_size=2000)
    )
    return stream_csv(
        filename=f"import-{job.pk}-rejected-rows.csv", header=[_("line"), _("column"), _("value"), _("reason")], rows=rows
    )


# --- quarantine ----------------------------------------------------------------------------------


@allowed("monitor")
def quarantine_list(request):
    form = forms.QuarantineFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    filters = {k: v for k, v in filters.items() if v}
    page = _page(request, selectors.quarantine_list(**filters))
    totals = selectors.quarantine_totals()
    return render(
        request,
        "audiences/quarantine_list.html",
        {
            "form": form,
            "page": page,
            "query": urlencode(filters),
            "statuses": Quarantine.Status.choices,
            "status_counts": [(v, label, totals.get(v, 0)) for v, label in Quarantine.Status.choices],
            "changes": QuarantineChange.objects.select_related("actor")[:20],
        },
    )


@allowed("monitor")
@require_POST
def quarantine_status(request, pk: int):
    row = get_object_or_404(Quarantine, pk=pk)
    form = forms.QuarantineStatusForm(request.POST)
    if form.is_valid():
        services.quarantine_set_status(actor=request.user, quarantine=row, status=form.cleaned_data["status"])
        messages.success(
            request,
            _("%(address)s is now %(status)s.") % {"address": row.address, "status": Quarantine.Status(form.cleaned_data["status"]).label},
        )
    else:
        messages.error(request, _("Choose a status from the list."))
    return redirect(safe_next(request, reverse("audiences:quarantine-list")))


@allowed("monitor")
@require_POST
def quarantine_delete(request, pk: int):
    row = Quarantine.objects.filter(pk=pk).first()
    if row is None:
        raise Http404(_("This quarantine entry no longer exists."))
    services.quarantine_delete(actor=request.user, quarantine=row)
    messages.success(request, _("%(address)s was removed from the quarantine list.") % {"address": row.address})
    return redirect(safe_next(request, reverse("audiences:quarantine-list")))
