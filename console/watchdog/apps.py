from django.apps import AppConfig


class WatchdogConfig(AppConfig):
    name = "console.watchdog"
    verbose_name = "Watchdog"

    def ready(self) -> None:
        from console.telemetry.signals import samples_recorded
        from console.watchdog.tasks import after_samples

        # Sensing does not call policy: telemetry announces a stored round, the watchdog evaluates
        # it in a task of its own.
        samples_recorded.connect(after_samples, dispatch_uid="watchdog-after-samples")
