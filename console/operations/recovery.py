"""Making sure no operation is lost or left running forever."""

import logging
from datetime import timedelta

from django.utils import timezone

from console.operations import progress
from console.operations.models import Operation
from console.operations.pipeline import RELEASE_TIMEOUT
from console.operations.request import enqueue

log = logging.getLogger(__name__)

# Beyond its own timeouts an operation gets this long before it is declared lost.
GRACE_SECONDS = 120
# A queued operation nobody took for this long is sent again: its message may have
# been lost with the broker (a Redis restart without persistence). A duplicate is
# harmless: the worker's claim runs an operation once.
REQUEUE_AFTER_SECONDS = 60


def requeue_active() -> int:
    """Send every unfinished operation to its worker again (after an in-memory broker was lost)."""
    count = 0
    for operation in Operation.objects.filter(state__in=Operation.ACTIVE_STATES).select_related("instance__host"):
        enqueue(operation)
        count += 1
    return count


def budget_seconds(operation: Operation) -> float:
    instance = operation.instance
    return instance.drain_timeout + instance.stop_timeout + RELEASE_TIMEOUT + instance.ready_timeout + GRACE_SECONDS


def fail_stale(now=None) -> list[int]:
    """Send again operations queued too long; fail those that outlived every timeout they have."""
    now = now or timezone.now()
    failed = []
    active = Operation.objects.filter(state__in=Operation.ACTIVE_STATES).select_related("instance__host")
    for operation in active:
        since = operation.started or operation.created
        if now - since <= timedelta(seconds=budget_seconds(operation)):
            if operation.state == Operation.State.QUEUED and now - since > timedelta(seconds=REQUEUE_AFTER_SECONDS):
                enqueue(operation)
                log.info("operation %s still queued after %s: sent again", operation.pk, now - since)
            continue
        if operation.state == Operation.State.QUEUED:
            reason = (
                f"no worker on queue {operation.instance.host.queue} picked it up within "
                f"{budget_seconds(operation):.0f} s; is that host's worker running?"
            )
        else:
            reason = f"did not finish within {budget_seconds(operation):.0f} s; its worker was lost"
        progress.finish(operation, Operation.State.FAILED, reason)
        log.warning("operation %s failed as stale: %s", operation.pk, reason)
        failed.append(operation.pk)
    return failed
