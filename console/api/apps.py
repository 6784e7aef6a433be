from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "console.api"
    verbose_name = "API"
