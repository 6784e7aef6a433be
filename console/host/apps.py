from django.apps import AppConfig


class HostConfig(AppConfig):
    name = "console.host"
    verbose_name = "Hosts' workers"

    def ready(self) -> None:
        from celery.signals import worker_ready

        worker_ready.connect(_follow_host_logs, weak=False)


def _follow_host_logs(sender=None, **kwargs) -> None:
    """A worker that serves host queues follows those hosts' instance logs (sampling needs the counts)."""
    from console.host.logs import start_follower
    from console.instances.models import host_of_queue

    queues = sender.app.amqp.queues.consume_from or {}
    hosts = [host for host in map(host_of_queue, queues) if host]
    if hosts:
        start_follower(hosts)
