from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.http import HttpResponseServerError, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from .decorators import allowed
from .errors import DispatchError, NotFound
from .forms import GroupsForm, ThrottledAuthenticationForm, UserCreateForm
from .roles import ROLES, SIGNED_IN
from .selectors import audit_log_list, group_list, roles_of_groups, user_list
from .services import user_create, user_groups_set

User = get_user_model()


class LoginView(auth_views.LoginView):
    """Sign in, throttled per username and client address; a throttled try answers 429."""

    authentication_form = ThrottledAuthenticationForm
    redirect_authenticated_user = True

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.throttled:
            response.status_code = 429
        return response


@allowed(SIGNED_IN)
def home(request):
    return render(request, "accounts/home.html", {"roles": ROLES.values()})


def _api_error(request, status: int, detail: str, code: str):
    """Errors under /api/ answer the API's shape even when no API view was reached (an unknown URL,
    a malformed request): {"detail": "<a sentence>", "code": "<machine code>"}."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": detail, "code": code}, status=status)
    return None


def bad_request(request, exception=None):
    message = _("This request could not be read: check what was sent and try again.")
    return _api_error(request, 400, message, "bad_request") or render(request, "400.html", {"message": message}, status=400)


def permission_denied(request, exception=None):
    message = str(exception) if exception and str(exception) else _("You do not have permission to see this page.")
    return _api_error(request, 403, message, "permission_denied") or render(request, "403.html", {"message": message}, status=403)


def page_not_found(request, exception=None):
    if isinstance(exception, NotFound):  # an object that is not there: its kind's one sentence
        message = not_found = str(exception)
    else:
        message, not_found = _("There is nothing at this address: check the URL (ids are whole numbers)."), ""
    return _api_error(request, 404, message, "not_found") or render(
        request, "404.html", {"message": message, "not_found": not_found}, status=404
    )


def server_error(request):
    message = _("Something went wrong on our side: try again in a moment. If it happens again, tell an administrator.")
    return _api_error(request, 500, message, "server_error") or HttpResponseServerError(message)


def _users_page(request, create_form=None, status=200):
    users = list(user_list())
    rows = [{"user": u, "groups": list(u.groups.all()), "roles": roles_of_groups(u.groups.all())} for u in users]
    groups = list(group_list())
    group_rows = [{"group": g, "roles": roles_of_groups([g])} for g in groups]
    return render(
        request,
        "accounts/users.html",
        {
            "rows": rows,
            "groups": groups,
            "group_rows": group_rows,
            "create_form": create_form or UserCreateForm(),
            "audit": audit_log_list(),
        },
        status=status,
    )


@allowed("administer")
def users(request):
    return _users_page(request)


@allowed("administer")
@require_POST
def user_create_view(request):
    form = UserCreateForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("The user was not created: correct the fields marked below."))
        return _users_page(request, create_form=form, status=400)
    data = form.cleaned_data
    user = user_create(
        actor=request.user,
        username=data["username"],
        password=data["password"],
        email=data["email"],
        first_name=data["first_name"],
        last_name=data["last_name"],
        groups=data["groups"],
    )
    messages.success(request, _("User %(name)s created.") % {"name": user.username})
    return redirect("users")


@allowed("administer")
@require_POST
def user_groups_view(request, pk: int):
    user = get_object_or_404(User, pk=pk)
    form = GroupsForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Choose groups from the list."))
        return redirect("users")
    try:
        entry = user_groups_set(actor=request.user, user=user, groups=form.cleaned_data["groups"])
    except DispatchError as e:
        messages.error(request, e.message)
        return redirect("users")
    if entry is None:
        messages.info(request, _("No change for %(name)s.") % {"name": user.username})
    else:
        messages.success(request, _("Groups of %(name)s saved.") % {"name": user.username})
    return redirect("users")
