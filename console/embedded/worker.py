"""The embedded mode's Celery worker and beat, as threads of the console process.

Same tasks, same routing, same acks as production; only the broker is in
memory, so a console restart re-queues what was in flight (see recovery).
"""

import logging
import threading

from celery.beat import EmbeddedService

from console.celery import app

log = logging.getLogger(__name__)


class EmbeddedWorker:
    def __init__(self, queues: list[str], concurrency: int, beat: bool = True):
        self.queues = queues
        self.worker = app.WorkController(
            pool_cls="threads",
            concurrency=concurrency,
            queues=queues,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="INFO",
        )
        # The same scheduler as `celery beat` in production: schedules live in the
        # database (django-celery-beat), not in a shelve file in the working directory.
        self.beat = EmbeddedService(app, thread=True, scheduler_cls=app.conf.beat_scheduler) if beat else None
        self.thread = threading.Thread(target=self.worker.start, name="celery-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()
        if self.beat is not None:
            self.beat.start()
        log.info("embedded worker consuming %s", ", ".join(self.queues))

    def stop(self) -> None:
        if self.beat is not None:
            self.beat.stop()
        self.worker.stop(in_sighandler=False)
        self.thread.join(timeout=10)
