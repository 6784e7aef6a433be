from django.apps import AppConfig


class EmbeddedConfig(AppConfig):
    name = "console.embedded"
    verbose_name = "Embedded mode"
