from django.apps import AppConfig


class AudiencesConfig(AppConfig):
    name = "audiences"

    def ready(self):
        # Registers the audiences' tasks in every process (web included): services enqueue them by
        # name, never importing tasks.py.
        from . import tasks  # noqa: F401
