"""Making sure no operation or rollout is lost or left running forever.

The database is the truth and messages are only nudges: a worker acknowledges an operation's
message when it starts it and claims the operation (pipeline.claim), so no broker redelivers a
message while its worker lives. If a worker dies, its operation's heartbeat goes stale and the
operation is sent again to its host's queue, where the next worker's claim takes it over; an
operation is failed as lost only once its heartbeat has been silent for LOST_AFTER_SECONDS with no
worker taking it over, never for lasting long while its worker is alive.
"""

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from console.operations import progress
from console.operations.models import Operation, Rollout
from console.operations.request import enqueue
from console.operations.rollout import enqueue_advance

log = logging.getLogger(__name__)

# A queued operation nobody took for this long is sent again: its message may have been lost with
# the broker (a Redis restart without persistence). A duplicate is harmless: the claim runs it once.
REQUEUE_AFTER_SECONDS = 60
# An operation whose worker has been silent this long, with no other worker taking it over, is lost.
LOST_AFTER_SECONDS = 120


def budget_seconds(operation: Operation) -> float:
    """How long an operation may wait in its queue for a worker of its host."""
    instance = operation.instance
    return instance.drain_timeout + instance.stop_timeout + instance.ready_timeout + LOST_AFTER_SECONDS


def _fail(operation: Operation, reason: str) -> bool:
    try:
        progress.finish(operation, Operation.State.FAILED, reason)
    except progress.Fenced:
        return False  # a worker claimed it meanwhile: not lost after all
    log.warning("operation %s failed: %s", operation.pk, reason)
    return True


def recover_operations(host_names: list[str] | None = None, now=None, fail: bool = True) -> dict:
    """Send again what a worker should be running and is not; fail what no worker will ever run.
    With `host_names`, only those hosts' operations (a host worker's own watch)."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.CONSOLE_HEARTBEAT_STALE_SECONDS)
    active = Operation.objects.filter(state__in=Operation.ACTIVE_STATES).select_related("instance__host")
    if host_names is not None:
        active = active.filter(instance__host__name__in=host_names)
    done = {"sent": [], "failed": []}
    for operation in active:
        queue = operation.instance.host.queue
        if operation.state == Operation.State.QUEUED:
            waited = (now - operation.created).total_seconds()
            if fail and waited > budget_seconds(operation):
                reason = (
                    f"no worker on queue {queue} picked it up within {budget_seconds(operation):.0f} s; "
                    f"is host {operation.instance.host.name}'s worker running?"
                )
                if _fail(operation, reason):
                    done["failed"].append(operation.pk)
            elif waited > REQUEUE_AFTER_SECONDS:
                enqueue(operation)
                done["sent"].append(operation.pk)
            continue
        last_sign = operation.heartbeat or operation.started or operation.created
        if last_sign >= stale:
            continue  # its worker is alive: however long it takes, it is not lost
        silent = (now - last_sign).total_seconds()
        if fail and silent > LOST_AFTER_SECONDS:
            reason = (
                f"its worker went silent {silent:.0f} s ago and no worker on queue {queue} took it over; "
                f"is host {operation.instance.host.name}'s worker running?"
            )
            if _fail(operation, reason):
                done["failed"].append(operation.pk)
        else:
            enqueue(operation)  # the next claim takes it over
            done["sent"].append(operation.pk)
    return done


def recover(now=None) -> dict:
    """The fleet-wide round beat runs every minute: operations, then every unfinished rollout."""
    done = recover_operations(now=now)
    rollouts = list(
        Rollout.objects.filter(state__in=[Rollout.State.QUEUED, Rollout.State.RUNNING]).values_list("pk", flat=True)
    )
    for rollout_id in rollouts:
        enqueue_advance(rollout_id)
    return {**done, "rollouts": rollouts}


def resume_at_start() -> int:
    """Send every unfinished operation to its worker (a console whose in-memory broker started
    afresh); returns how many were left running by the last run."""
    left_running = 0
    for operation in Operation.objects.filter(state__in=Operation.ACTIVE_STATES).select_related("instance__host"):
        enqueue(operation)
        left_running += operation.state == Operation.State.RUNNING
    for rollout_id in Rollout.objects.filter(state__in=[Rollout.State.QUEUED, Rollout.State.RUNNING]).values_list(
        "pk", flat=True
    ):
        enqueue_advance(rollout_id)
    return left_running


class Watch:
    """A host worker's own watch over its hosts' operations: one whose worker died is sent again
    within a few seconds of its heartbeat going stale, without waiting for beat."""

    def __init__(self, host_names: list[str], every: float | None = None):
        self.host_names = host_names
        self.every = every or max(1.0, settings.CONSOLE_HEARTBEAT_STALE_SECONDS / 2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="operations-watch", daemon=True)

    def start(self) -> "Watch":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                recover_operations(self.host_names, fail=False)
            except Exception:  # the database may be away: look again next round
                log.warning("the operations watch could not look at its hosts' operations", exc_info=True)
            finally:
                close_old_connections()
