"""The Celery app. Operation and sampling tasks go to their instance's host queue
(console.instances.models.host_queue)."""

import logging
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("console")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

log = logging.getLogger(__name__)


def _survive_broker_loss() -> None:
    """Keep a worker alive when Redis goes away while it runs a task.

    On a lost connection kombu's Redis transport closes the channel; putting the
    unacknowledged messages back, and later acknowledging the task that was
    running, then go through that closed channel. Both raise AttributeError (not
    a connection error), which the worker treats as unrecoverable: it exits and
    the restart in progress dies with it (tests/operations/test_broker_restart.py).
    The messages stay in Redis's unacked index, which the visibility timeout
    restores; a redelivered operation is a no-op once it has finished (claim).
    """
    from kombu.transport import redis as redis_transport

    qos = redis_transport.QoS
    if getattr(qos, "survives_broker_loss", False):
        return

    def tolerant(method, what: str):
        def wrapper(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except AttributeError:
                transport = self.channel.connection
                if transport is not None and transport.client is not None:
                    raise  # not the closed-channel case: a real bug
                log.warning("broker connection lost: could not %s; the visibility timeout takes over", what)
                if method.__name__ == "restore_unacked":
                    self._delivered.clear()
                return None

        return wrapper

    qos.restore_unacked = tolerant(qos.restore_unacked, "restore unacked messages")
    qos.ack = tolerant(qos.ack, "acknowledge a finished task")
    qos.reject = tolerant(qos.reject, "reject a task")
    qos.survives_broker_loss = True


_survive_broker_loss()
