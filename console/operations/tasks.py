"""Celery tasks for operations: thin wrappers around the pipeline, rollouts and recovery.

Operations are acknowledged when a worker starts them, not when they end: the operation's claim and
heartbeat in the database, not the broker's visibility timeout, decide who runs it (recovery.py), so
a restart that takes minutes is never delivered a second time while its worker lives.
"""

from celery import shared_task
from django.db import DatabaseError, connections

from console.instances.models import Instance
from console.operations import effect, pipeline, recovery, rollout, trial


@shared_task(bind=True, acks_late=False, max_retries=None)
def run_operation(self, operation_id: int) -> str | None:
    try:
        operation = pipeline.execute(operation_id)
    except pipeline.Busy:
        return "busy: another worker runs it"  # if that worker dies, recovery sends it again
    except DatabaseError:
        # The database went away mid-operation (a restart, a failover). Try again once it is
        # back: the claim takes the operation over when its heartbeat is stale and resumes it
        # from its first step, which is safe to repeat (drain, stop and start check state first).
        connections.close_all()
        raise self.retry(countdown=10) from None
    return operation.state if operation else None


@shared_task(ignore_result=True)
def recover() -> dict:
    """Beat's minute round: operations nobody runs are sent again or failed; rollouts advanced."""
    return recovery.recover()


@shared_task(ignore_result=True)
def settle_effects() -> int:
    """Beat's minute round: restarts whose window after has passed keep their p95 before and after."""
    return effect.settle()


@shared_task(acks_late=True, ignore_result=True)
def advance_rollout(rollout_id: int) -> str | None:
    """One short step of a rollout (no waiting: safe to deliver twice); on the console queue."""
    advanced = rollout.advance(rollout_id)
    return advanced.state if advanced else None


@shared_task(acks_late=False, ignore_result=True)
def try_instance(instance_id: int, user_id: int, trial_id: str, chat: list, max_tokens: int) -> str:
    """An operator's try, on the instance's host worker (not retried: the operator sees the outcome)."""
    instance = Instance.objects.select_related("host").filter(pk=instance_id).first()
    if instance is None:
        return "gone"
    return trial.run(instance, user_id, trial_id, chat, max_tokens)["state"]
