from django.apps import AppConfig


class TrackingConfig(AppConfig):
    name = "tracking"

    def ready(self):
        from . import webhooks  # noqa: F401  (connects the anymail tracking signal)
