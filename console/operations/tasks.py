"""Celery tasks for operations: thin wrappers around the pipeline."""

from celery import shared_task

from console.operations import pipeline


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_operation(operation_id: int) -> str | None:
    operation = pipeline.execute(operation_id)
    return operation.state if operation else None


@shared_task
def fail_stale_operations() -> list[int]:
    from console.operations.recovery import fail_stale

    return fail_stale()
