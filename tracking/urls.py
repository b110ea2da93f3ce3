from anymail import urls as anymail_urls
from django.urls import URLPattern, include, path

from . import views, webhooks

app_name = "tracking"


def _guarded(patterns):
    """anymail's tracking webhook routes, each refusing requests until a webhook secret is set."""
    return [
        URLPattern(p.pattern, webhooks.require_webhook_secret(p.callback), p.default_args, p.name)
        for p in patterns
        if isinstance(p, URLPattern) and "tracking" in str(p.pattern)
    ]


urlpatterns = [
    # the recipient's endpoints (public, signed tokens)
    path("t/o/<str:token>.gif", views.open_pixel, name="open"),
    path("t/c/<str:token>", views.click, name="click"),
    path("t/u/<str:token>", views.unsubscribe, name="unsubscribe"),
    path("t/m/<str:token>", views.mirror, name="mirror"),
    # provider events
    path("webhooks/mailgun/tracking/", webhooks.mailgun_tracking, name="mailgun-webhook"),
    path("webhooks/", include((_guarded(anymail_urls.urlpatterns), "anymail"), namespace="anymail")),
    # staff partials, loaded by URL name
    path("profiles/<int:pk>/history/", views.profile_history, name="profile-history"),
    path("deliveries/<int:pk>/tracking-logs/", views.delivery_tracking_logs, name="delivery-tracking-logs"),
    path("deliveries/<int:pk>/tracked-urls/", views.delivery_tracked_urls, name="delivery-tracked-urls"),
]
