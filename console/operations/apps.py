from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "console.operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Binds shared tasks to the console's Celery app in every Django process
        # (kept out of console/__init__ so plain modules import without Celery).
        from celery.signals import worker_ready, worker_shutdown

        import console.celery  # noqa: F401

        worker_ready.connect(_watch_host_operations, weak=False)
        worker_shutdown.connect(_stop_watching, weak=False)


_watches: list = []


def _watch_host_operations(sender=None, **kwargs) -> None:
    """A worker that serves host queues watches those hosts' operations (takes over a dead worker's)."""
    from console.instances.models import host_of_queue
    from console.operations.recovery import Watch

    queues = sender.app.amqp.queues.consume_from or {}
    hosts = [host for host in map(host_of_queue, queues) if host]
    if hosts:
        _watches.append(Watch(hosts).start())


def _stop_watching(sender=None, **kwargs) -> None:
    while _watches:
        _watches.pop().stop()
