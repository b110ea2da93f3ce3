from django.apps import AppConfig


class KpisConfig(AppConfig):
    name = "kpis"

    def ready(self):
        from deliveries.hooks import on_send_ended

        from . import services, tasks  # noqa: F401  (registers the KPI tasks in every process, web included)

        # A send that ends recomputes its KPIs (deliveries owns the hook; it imports nothing of kpis).
        on_send_ended(services.kpis_send_ended)
