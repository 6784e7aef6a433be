from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "console.schedules"
    verbose_name = "Schedules"

    def ready(self) -> None:
        from console.schedules import signals  # noqa: F401  (beat entries follow deletions)
