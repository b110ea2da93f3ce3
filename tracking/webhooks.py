"""Provider webhooks (django-anymail): events of email service providers update our sending logs.

Mailgun's tracking webhook is verified by its webhook signing key (MAILGUN_WEBHOOK_SIGNING_KEY),
and refused (404) while no key is configured. Every other provider comes through anymail's own
views at /webhooks/<esp>/tracking/, authenticated by HTTP basic auth (ANYMAIL_WEBHOOK_SECRET);
with no secret configured they are refused too, never open to anyone.
"""

from __future__ import annotations

import json
import logging
import time

from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.signals import tracking
from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from django.conf import settings
from django.dispatch import receiver
from django.http import HttpResponseForbidden, HttpResponseNotFound
from django.views.decorators.csrf import csrf_exempt

from .services import provider_event_record

logger = logging.getLogger(__name__)


def _anymail(name: str) -> str:
    return (getattr(settings, "ANYMAIL", {}) or {}).get(name, "") or ""


class SignedMailgunTrackingView(MailgunTrackingWebhookView):
    """Mailgun's tracking webhook, authenticated by its signature alone (no basic auth on top),
    and only while the signed timestamp is recent (MAILGUN_WEBHOOK_MAX_AGE_SECONDS either way): a
    captured request cannot be replayed later."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.basic_auth = []

    def validate_request(self, request):
        super().validate_request(request)  # the signature (of the timestamp and the token)
        try:
            if request.content_type == "application/json":
                timestamp = float(json.loads(request.body.decode("utf-8"))["signature"]["timestamp"])
            else:
                timestamp = float(request.POST["timestamp"])
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as err:
            raise AnymailWebhookValidationFailure("Mailgun webhook called without a readable timestamp") from err
        window = float(getattr(settings, "MAILGUN_WEBHOOK_MAX_AGE_SECONDS", 900))
        if abs(time.time() - timestamp) > window:
            logger.warning("Mailgun webhook refused: its signed timestamp is %.0f s away from now", time.time() - timestamp)
            raise AnymailWebhookValidationFailure(
                "Mailgun webhook refused: its timestamp is outside the accepted window (a replay, or a clock that is off)"
            )


_mailgun_view = SignedMailgunTrackingView.as_view()


@csrf_exempt
def mailgun_tracking(request):
    if not _anymail("MAILGUN_WEBHOOK_SIGNING_KEY"):
        return HttpResponseNotFound("Mailgun webhooks are not configured: set MAILGUN_WEBHOOK_SIGNING_KEY.")
    return _mailgun_view(request)


def require_webhook_secret(view):
    """Refuse basic-auth-only providers while ANYMAIL_WEBHOOK_SECRET is not set."""

    @csrf_exempt
    def wrapped(request, *args, **kwargs):
        if not _anymail("WEBHOOK_SECRET"):
            return HttpResponseForbidden("Provider webhooks are not configured: set ANYMAIL_WEBHOOK_SECRET.")
        return view(request, *args, **kwargs)

    return wrapped


@receiver(tracking, dispatch_uid="dispatch.tracking.provider_event")
def on_tracking_event(sender, event, esp_name, **kwargs):
    outcome = provider_event_record(esp=str(esp_name).lower(), event=event)
    logger.info("%s %s event (%s): %s", esp_name, event.event_type, event.event_id, outcome)
