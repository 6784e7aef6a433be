from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "console.web"
    verbose_name = "Pages"

    def ready(self) -> None:
        from console.web import checks  # noqa: F401  (registers the settings checks)
