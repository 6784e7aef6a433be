"""Celery tasks for operations: thin wrappers around the pipeline."""

from celery import shared_task
from django.db import DatabaseError, connections

from console.operations import pipeline, recovery, rollout


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_operation(self, operation_id: int) -> str | None:
    try:
        operation = pipeline.execute(operation_id)
    except pipeline.Busy:
        # A redelivery while the first worker is still alive and working:
        # look again later, in case that worker dies before it finishes.
        raise self.retry(countdown=15) from None
    except DatabaseError:
        # The database went away mid-operation (a restart, a failover). Try again once it is
        # back: the claim takes the operation over when its heartbeat is stale and resumes it
        # from its first step, which is safe to repeat (drain, stop and start check state first).
        connections.close_all()
        raise self.retry(countdown=10) from None
    return operation.state if operation else None


@shared_task
def fail_stale_operations() -> list[int]:
    return recovery.fail_stale()


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_rollout(rollout_id: int) -> str | None:
    """Runs on the console queue; each restart runs on its instance's host queue."""
    finished = rollout.execute_rollout(rollout_id)
    return finished.state if finished else None
