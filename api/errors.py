"""One error shape everywhere: {"detail": "<a sentence>", "code": "<machine code>"}.

Validation errors keep the per-field details under "errors" as well.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.errors import DispatchError


def _first(data):
    """First (message, code) pair found in a DRF error structure."""
    if isinstance(data, list):
        for item in data:
            found = _first(item)
            if found:
                return found
    elif isinstance(data, dict):
        for key, value in data.items():
            found = _first(value)
            if found:
                msg, code = found
                if key not in ("non_field_errors", "detail"):
                    msg = f"{key}: {msg}"
                return msg, code
    elif data is not None:
        return str(data), getattr(data, "code", "invalid")
    return None


def exception_handler(exc, context):
    if isinstance(exc, DispatchError):
        return Response({"detail": exc.message, "code": exc.code}, status=exc.status)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=exc.messages)
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(detail=str(exc) or None)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(detail=str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        msg, code = _first(response.data) or ("The request is not valid.", "invalid")
        if not msg.endswith("."):
            msg += "."
        response.data = {"detail": msg, "code": code, "errors": response.data}
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = {"detail": str(detail), "code": code}
    if response.status_code == status.HTTP_401_UNAUTHORIZED and "detail" in response.data:
        response.data["detail"] = (
            "Authentication credentials were not provided or are not valid: send a token "
            "(Authorization: Token <key>, from POST /api/auth/token/) or sign in."
            if response.data["code"] == "not_authenticated"
            else response.data["detail"]
        )
    return response
