from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    name = "console.telemetry"
    verbose_name = "Telemetry"

    def ready(self) -> None:
        from celery.signals import worker_ready

        worker_ready.connect(_follow_host_logs, weak=False)


def _follow_host_logs(sender=None, **kwargs) -> None:
    """A worker that serves host queues follows those hosts' instance logs (sampling needs the counts)."""
    from console.telemetry.follow import start_follower

    queues = sender.app.amqp.queues.consume_from or {}
    hosts = [name.removeprefix("host.") for name in queues if name.startswith("host.")]
    if hosts:
        start_follower(hosts)
