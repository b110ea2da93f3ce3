from django.apps import AppConfig


class DeliveriesConfig(AppConfig):
    name = "deliveries"

    def ready(self):
        # Registers the deliveries' tasks in every process (web included): services and the engine
        # enqueue them by name (deliveries.queue), never importing tasks.py.
        from . import tasks  # noqa: F401
