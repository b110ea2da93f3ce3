from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"

    def ready(self):
        from .fields import make_json_input_strict

        make_json_input_strict()
