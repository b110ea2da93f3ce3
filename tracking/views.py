"""Tracking pages.

Public endpoints (the recipient's): open pixel, click redirect, unsubscribe, mirror page. They use
no session and no CSRF token (the signed token authorizes them), answer a plain 404 page for a
bad or unknown token (the pixel still answers its GIF), and never redirect anywhere but to the
URL stored for the token.

Staff partials (loaded by URL name from the profile page and the message dashboard): the profile's
message history, a message's tracking logs and tracked URLs.
"""

from __future__ import annotations

import logging

from django.core.paginator import Paginator
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.http import urlencode
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_safe

from accounts.decorators import allowed
from accounts.roles import ROLES
from accounts.selectors import user_has_any_role
from audiences.selectors import profile_get
from deliveries.models import Delivery, SendingStatus
from deliveries.personalization import render_message
from deliveries.selectors import delivery_get
from deliveries.tokens import MIRROR, UNSUBSCRIBE, make_token

from . import selectors, services
from .models import TrackingLog

logger = logging.getLogger(__name__)

# A transparent 1x1 GIF: 43 bytes.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_CACHE = {
    "Cache-Control": "no-cache, no-store, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
# The mirror page is marketer-written HTML served from our origin: sandboxed (an opaque origin,
# no scripts, no navigation of the top window; its links open in a new window), so it can reach
# neither the app's cookies nor its pages, and nobody may frame it.
MIRROR_CSP = "sandbox allow-popups allow-popups-to-escape-sandbox; script-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
ANY_ROLE = tuple(ROLES)
PAGE_SIZE = 50


def _hit(request) -> services.Hit:
    return services.Hit(user_agent=request.META.get("HTTP_USER_AGENT", ""), ip=request.META.get("REMOTE_ADDR", ""))


def _no_cache(response: HttpResponse) -> HttpResponse:
    for k, v in NO_CACHE.items():
        response[k] = v
    return response


def _not_found() -> HttpResponse:
    return _no_cache(HttpResponse(render_to_string("tracking/not_found.html"), status=404))


# --- public endpoints ---------------------------------------------------------------------------
@require_safe
def open_pixel(request, token: str):
    try:
        if request.method == "GET":  # HEAD (a link checker) records nothing
            services.tracking_open(token=token, hit=_hit(request))
    except Exception:  # the pixel is always answered, even when recording fails
        logger.exception("open pixel: recording failed")
    return _no_cache(HttpResponse(GIF, content_type="image/gif"))


@require_safe
def click(request, token: str):
    # HEAD (link checkers, mail clients' URL hygiene checks) resolves the link and records nothing.
    url = services.tracking_click(token=token, hit=_hit(request), record=request.method == "GET")
    if url is None or not services.is_safe_target(url):
        return _not_found()
    response = HttpResponseRedirect(url)
    response["Cache-Control"] = NO_CACHE["Cache-Control"]
    response["Referrer-Policy"] = "no-referrer"
    return response


@csrf_exempt  # RFC 8058 one-click POST: no cookie, no CSRF token; the signed token authorizes it
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token: str):
    log = services.sending_log_for_token(token=token, purpose=UNSUBSCRIBE)
    if log is None:
        return _not_found()
    context = {"log": log, "delivery": log.delivery, "profile": log.profile, "action": request.path}
    if request.method == "POST":
        services.tracking_optout(log=log, hit=_hit(request))
        return _no_cache(render(request, "tracking/unsubscribed.html", context))
    context["already"] = bool(log.profile and log.profile.email_denylisted)
    return _no_cache(render(request, "tracking/unsubscribe.html", context))


def _is_staff_preview(request) -> bool:
    # Only a request carrying a session cookie can be staff: recipients' views cost no session read.
    if not request.COOKIES:
        return False
    user = getattr(request, "user", None)
    return bool(user and user.is_authenticated and user_has_any_role(user=user, roles=ANY_ROLE))


@require_GET
def mirror(request, token: str):
    log = services.sending_log_for_token(token=token, purpose=MIRROR)
    if log is None:
        return _not_found()
    try:
        message = render_message(delivery=log.delivery, profile=log.profile, sending_log_id=log.pk)
    except Exception:  # content that no longer renders (edited since, sandbox refusal): nothing to show
        logger.warning("mirror page of sending log %s does not render", log.pk, exc_info=True)
        return _not_found()
    if not _is_staff_preview(request):  # staff previewing it from the app record nothing
        services.tracking_mirror_view(log=log, hit=_hit(request))
    html = message.html or render_to_string("tracking/mirror_text.html", {"message": message})
    response = _no_cache(HttpResponse(html))
    response["Content-Security-Policy"] = MIRROR_CSP
    response["Referrer-Policy"] = "no-referrer"
    return response


# --- staff partials -----------------------------------------------------------------------------
@allowed("read")
def profile_history(request, pk: int):
    profile = profile_get(pk=pk, user=request.user)
    rows = list(selectors.profile_history(profile_id=profile.pk)[:200])
    for row in rows:
        # the mirror page only: this token cannot unsubscribe the person nor count an open
        row.mirror_token = make_token(row.pk, purpose=MIRROR) if row.status == SendingStatus.SENT else ""
    return render(request, "tracking/profile_history.html", {"profile": profile, "rows": rows})


@allowed("read")
def delivery_tracking_logs(request, pk: int):
    delivery = delivery_get(pk=pk, user=request.user, queryset=Delivery.objects.only("id"))
    kind, machine = request.GET.get("kind", ""), request.GET.get("machine", "")
    logs = selectors.delivery_tracking_logs(delivery_id=delivery.pk, kind=kind, machine=machine)
    page = Paginator(logs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = urlencode({k: v for k, v in {"kind": kind, "machine": machine}.items() if v})
    return render(
        request,
        "tracking/delivery_tracking_logs.html",
        {"delivery": delivery, "page": page, "kind": kind, "machine": machine, "query": query, "kinds": TrackingLog.Kind.choices},
    )


@allowed("read")
def delivery_tracked_urls(request, pk: int):
    delivery = delivery_get(pk=pk, user=request.user, queryset=Delivery.objects.only("id"))
    return render(request, "tracking/delivery_tracked_urls.html", {"delivery": delivery, "urls": selectors.delivery_tracked_urls(delivery_id=delivery.pk)})
