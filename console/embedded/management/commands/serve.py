"""Serve the console over ASGI; in embedded mode also run the worker and beat in-process."""

import signal

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from console.embedded.worker import EmbeddedWorker
from console.host.logs import start_follower, stop_follower
from console.host.process import ProcessRuntime
from console.instances.models import Host, Instance, host_queue
from console.operations.recovery import Watch, resume_at_start


class Terminated(Exception):
    """SIGTERM arrived."""


def _terminated(signum, frame) -> None:
    raise Terminated()


class Command(BaseCommand):
    help = (
        "Serve the console (and, in embedded mode, its worker and beat) until Ctrl-C or SIGTERM, which "
        "stop the worker and the local process instances it runs (unless --keep-instances)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--keep-instances", action="store_true", help="Leave local process instances running on exit."
        )

    def handle(self, *args, host: str, port: int, keep_instances: bool, **options):
        # Code newer than its database (an upgrade without `migrate`) would serve 500s and fail every
        # task: refuse to start and say what to run.
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if pending:
            names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _backwards in pending[:5])
            raise CommandError(
                f"{len(pending)} migration(s) not applied ({names}{', ...' if len(pending) > 5 else ''}): "
                "run `python manage.py migrate` first (`make run` does)."
            )
        embedded = settings.CONSOLE_MODE == "embedded"
        worker = watch = None
        if embedded:
            hosts = [h.name for h in Host.objects.all()] or [settings.CONSOLE_HOST_NAME]
            queues = {settings.CELERY_TASK_DEFAULT_QUEUE} | {host_queue(h) for h in hosts}
            worker = EmbeddedWorker(sorted(queues), settings.CONSOLE_WORKER_CONCURRENCY)
            worker.start()
            start_follower(hosts)
            watch = Watch(hosts).start()
            resumed = resume_at_start()  # queued ones (the demo's first start, say) just go to the worker
            if resumed:
                self.stdout.write(f"resumed {resumed} operation(s) the last run left unfinished")
        self.stdout.write(f"Instance Console on http://{host}:{port}/ ({settings.CONSOLE_MODE} mode). Ctrl-C stops it.")
        config = uvicorn.Config("console.asgi:application", host=host, port=port, lifespan="off", log_level="warning")
        # SIGTERM (systemd, docker stop) takes Ctrl-C's way out: uvicorn shuts down gracefully, then
        # raises the signal again once it has put the previous handler back; this one turns it into
        # the exception below, so the worker and the embedded instances are stopped too.
        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            uvicorn.Server(config).run()
        except (KeyboardInterrupt, Terminated):
            pass  # uvicorn re-raises Ctrl-C and SIGTERM after its graceful shutdown; ours follows
        finally:
            if worker is not None:
                watch.stop()
                stop_follower()
                worker.stop()
            if embedded and not keep_instances:
                self._stop_local_instances()
            signal.signal(signal.SIGTERM, previous)

    def _stop_local_instances(self) -> None:
        runtime = ProcessRuntime()
        for instance in Instance.objects.filter(
            runtime=Instance.Runtime.PROCESS, host__name=settings.CONSOLE_HOST_NAME
        ):
            if runtime.status(instance).running:
                result = runtime.stop(instance, timeout=instance.stop_timeout)
                self.stdout.write(f"stopped {instance.name}: {result.detail}")
