"""Who may do what, from ONE table (accounts.roles.ACCESS, DOMAIN.md §3), applied to every page
and every API operation.

The URL configuration is walked: every route must name its action in the table (a page through
`@allowed(...)`, an API view through `access`), or be listed below as public or staff-only with the
reason. Then every route × method is requested by each demo role, by a user with no role and by
an anonymous visitor, and the answer must match the table: refused (403, or 401 / the login page
when anonymous) exactly when the user holds none of the action's roles.

Issue 15 item 4: before, six HTML pages (profiles list and detail, audiences list and detail,
import detail and its rejected-rows CSV) only asked for a login while the API refused the same
user; and the API let every role in to actions its services then refused one by one.
"""

import re
from datetime import date

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from accounts import roles
from accounts.roles import ACCESS
from audiences.models import ImportJob, Quarantine
from deliveries.models import MessageCategory
from deliveries.services import delivery_create, delivery_prepare
from ops.models import Alert
from tests.deliveries.conftest import HTML, make_audience, make_profiles

pytestmark = pytest.mark.django_db

# Routes outside the role table, and why.
PUBLIC = {
    "login": "the sign-in page",
    "logout": "signing out",
    "api-token": "exchanges a login and password for a token (throttled)",
    "api-health": "health for load balancers, no secrets",
    "api-schema": "the API's description",
    "api-docs": "the API's documentation page",
    "tracking:open": "the recipient's pixel (signed token)",
    "tracking:click": "the recipient's link (signed token)",
    "tracking:unsubscribe": "the recipient's opt-out (signed token)",
    "tracking:mirror": "the recipient's mirror page (signed token)",
    "tracking:mailgun-webhook": "provider webhook (signature)",
}
STAFF_ONLY: set[str] = set()
PUBLIC_NAMESPACES = {"anymail"}  # provider webhooks (HTTP basic auth)

USERS = {  # login -> groups
    "admin": [roles.ADMINISTRATORS],
    "marketer": [roles.STANDARD_USERS],
    "preparer": [roles.PREPARERS],
    "approver": [roles.APPROVERS],
    "ops": [roles.DELIVERY_SUPERVISORS],
    "norole": [],
}
PAGE_METHODS = ("GET", "POST")
API_METHODS = ("get", "post", "put", "patch", "delete")


def routes():
    """(name, regex pattern, view) for every route but Django's own admin site."""

    def walk(patterns, prefix, namespace):
        for p in patterns:
            if isinstance(p, URLResolver):
                if str(p.pattern).startswith("admin/"):
                    continue
                yield from walk(p.url_patterns, prefix + p.pattern.regex.pattern.lstrip("^"), p.namespace or namespace)
            elif isinstance(p, URLPattern):
                name = f"{namespace}:{p.name}" if namespace else p.name
                yield name, namespace, prefix + p.pattern.regex.pattern.lstrip("^"), p.callback

    return list(walk(get_resolver().url_patterns, "", None))


def declared(view):
    """{method: action} for a route's view (API views: per handler they define)."""
    cls = getattr(view, "cls", None)
    if cls is not None:
        access = getattr(cls, "access", None)
        methods = [m.upper() for m in API_METHODS if hasattr(cls, m)]
        if isinstance(access, dict):
            return {m: access.get(m) for m in methods}
        return {m: access for m in methods}
    access = getattr(view, "access", None)
    return {m: access for m in PAGE_METHODS} if access is not None else {}


def test_every_route_names_its_action_in_the_table():
    undeclared = []
    for name, namespace, _regex, view in routes():
        if name in PUBLIC or name in STAFF_ONLY or namespace in PUBLIC_NAMESPACES:
            continue
        access = declared(view)
        if not access or any(a is None for a in access.values()):
            undeclared.append(name)
            continue
        for action in access.values():
            if isinstance(action, dict):
                assert set(action.values()) <= set(ACCESS), (name, action)
            else:
                assert action in ACCESS, (name, action)
    assert undeclared == [], f"routes that name no action of accounts.roles.ACCESS: {undeclared}"


@pytest.fixture
def world(make_user, django_capture_on_commit_callbacks):
    users = {login: make_user(login, *groups) for login, groups in USERS.items()}
    author = make_user("author", roles.STANDARD_USERS)
    profiles = make_profiles(["one@example.com", "two@example.com"])
    audience = make_audience(profiles, name="Permission audience")
    d = delivery_create(
        user=author,
        data={"label": "Table", "sender_address": "news@shop.example.com", "subject": "Hi", "html": HTML, "audience": audience},
    )
    with django_capture_on_commit_callbacks(execute=True):
        delivery_prepare(delivery=d, user=author)
    objects = {
        "delivery": d,
        "profile": profiles[0],
        "audience": audience,
        "import": ImportJob.objects.create(audience=audience, file_name="x.csv", created_by=author, status=ImportJob.Status.DONE),
        "quarantine": Quarantine.objects.create(address="q@example.com", channel="email", status=Quarantine.Status.QUARANTINE),
        "alert": Alert.objects.create(delivery=d, criterion="bounce_rate", day=date.today(), raised_at=timezone.now(), summary="x"),
        "user": author,
        "category": MessageCategory.objects.create(name="Table category"),
    }
    return users, objects


def object_for(name: str, objects: dict):
    for key, obj in (
        ("audience", "audience"), ("profile", "profile"), ("import", "import"), ("quarantine", "quarantine"),
        ("alert-acknowledge", "alert"), ("user-groups", "user"), ("categor", "category"),
    ):  # fmt: skip
        if key in name:
            return objects[obj]
    return objects["delivery"]


def urls_of(name: str, regex: str, objects: dict, view) -> list[tuple[str, str | None]]:
    """(url, sub-action) pairs for a route: its groups filled with real objects."""
    action_kw = getattr(view, "access", None)
    subs = list(action_kw) if isinstance(action_kw, dict) and getattr(view, "cls", None) is None else [None]
    out = []
    for sub in subs:
        url = regex.rstrip("$").replace("\\Z", "").replace("\\", "")

        def fill(m, sub=sub):
            group = m.group(1)
            if group == "pk":
                return str(object_for(name, objects).pk)
            if group == "profile_pk":
                return str(objects["profile"].pk)
            if group == "action":
                return sub
            if group == "tab":
                return "sending"
            return "x"

        url = re.sub(r"\(\?P<(\w+)>[^)]*\)", fill, url)
        out.append(("/" + url, sub))
    return out


def expected_allowed(user, action: str) -> bool:
    """From the table alone: any entry of the action fully held (a role, or roles held together)."""
    from accounts.selectors import user_roles

    if user is None:
        return False
    held = {r.codename for r in user_roles(user=user)}
    needed = ACCESS[action]
    return not needed or any(set(e) <= held if isinstance(e, tuple) else e in held for e in needed)


def test_every_page_and_api_operation_follows_the_table(world):
    users, objects = world
    clients = {}
    for login, user in [*users.items(), ("anonymous", None)]:
        c = Client()
        if user is not None:
            c.force_login(user)
        clients[login] = (c, user)
    wrong = []
    checked = 0
    for name, namespace, regex, view in routes():
        if name in PUBLIC or name in STAFF_ONLY or namespace in PUBLIC_NAMESPACES:
            continue
        access = declared(view)
        is_api = getattr(view, "cls", None) is not None
        for url, sub in urls_of(name, regex, objects, view):
            for method, action in access.items():
                if isinstance(action, dict):
                    action = action[sub]
                for login, (c, user) in clients.items():
                    with transaction.atomic():  # every change a request makes is undone: the next one sees the same world
                        response = c.generic(method, url, "{}" if is_api else "", content_type="application/json" if is_api else "application/x-www-form-urlencoded")
                        transaction.set_rollback(True)
                    checked += 1
                    status = response.status_code
                    refused = status in (401, 403) or (status == 302 and "/login/" in response.get("Location", ""))
                    if expected_allowed(user, action) == refused:
                        wrong.append(f"{method} {url} as {login}: {status} ({action}: {'allowed' if not refused else 'refused'})")
                    elif refused and user is not None and status != 403:
                        wrong.append(f"{method} {url} as {login}: {status}, expected 403")
                    elif refused and user is None and is_api and status != 401:
                        wrong.append(f"{method} {url} anonymous: {status}, expected 401")
    assert checked > 700
    assert wrong == []
