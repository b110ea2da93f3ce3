"""Request guards shared by every app."""

from __future__ import annotations

import json

from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.translation import gettext as _

NUL = "\x00"


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class RejectNulMiddleware:
    """A NUL character in a URL, a query string, a form or a JSON body is refused with a 400 and a
    sentence, before any view runs: PostgreSQL text cannot hold one, so it would otherwise end
    as a server error in whichever search, filter or field received it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if self._carries_nul(request):
            message = _("The request contains a NUL character (\\0), which no field accepts: remove it and try again.")
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": message, "code": "invalid_character"}, status=400)
            return HttpResponse(render_to_string("400.html", {"message": message}, request=request), status=400)
        return self.get_response(request)

    @staticmethod
    def _carries_nul(request) -> bool:
        if NUL in request.path or "%00" in request.META.get("QUERY_STRING", ""):
            return True
        if any(NUL in key or any(NUL in v for v in values) for key, values in request.GET.lists()):
            return True
        content_type = request.META.get("CONTENT_TYPE", "")
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            if content_type.startswith("application/x-www-form-urlencoded"):
                return any(NUL in key or any(NUL in v for v in values) for key, values in request.POST.lists())
            if "json" in content_type:
                body = request.body  # read once; the view reads it again from memory
                if b"\x00" not in body and b"\\u0000" not in body.lower():
                    return False
                try:
                    return _has_nul(json.loads(body))
                except ValueError:
                    return b"\x00" in body
        return False


# The app's own pages load scripts and styles from this site only. Inline styles stay allowed: the
# pages use style attributes (progress bars), and the message preview (a sandboxed iframe whose
# srcdoc inherits this policy) shows marketer HTML with its inline styles and its remote images.
APP_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: https: http:",
        "font-src 'self' data: https:",
        "connect-src 'self'",
        "frame-src 'self'",
        "frame-ancestors 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    """Adds APP_CSP to every HTML answer that does not set its own policy (the mirror page sets a
    stricter one: a sandbox)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" not in response and response.get("Content-Type", "").startswith("text/html"):
            response["Content-Security-Policy"] = APP_CSP
        return response
