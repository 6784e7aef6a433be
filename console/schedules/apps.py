from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "console.schedules"
    verbose_name = "Schedules and watchdog"
