from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "console.operations"
    verbose_name = "Operations"
