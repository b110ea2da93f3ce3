from django.apps import AppConfig


class KpisConfig(AppConfig):
    name = "kpis"

    def ready(self):
        # Registers the KPI tasks in every process (web included), so the apps below, which import
        # nothing of kpis, can enqueue them by name (deliveries: "kpis.send_ended").
        from . import tasks  # noqa: F401
