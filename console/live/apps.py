from django.apps import AppConfig


class LiveConfig(AppConfig):
    name = "console.live"
    verbose_name = "Live updates"
