"""Recording an operation's steps and telling the browsers about them."""

from datetime import datetime

from django.utils import timezone

from console.alerts.notify import FAILED_OPERATION, notify
from console.audit.record import record
from console.live.events import OPERATION_UPDATED, publish
from console.operations.models import Operation
from console.operations.summaries import operation_summary


def announce(operation: Operation) -> None:
    publish(operation.instance.name, OPERATION_UPDATED, operation_summary(operation))


def begin_step(operation: Operation, name: str) -> dict:
    step = {"name": name, "state": "running", "started": timezone.now().isoformat(), "finished": None, "detail": ""}
    operation.steps = [*operation.steps, step]
    operation.save(update_fields=["steps"])
    announce(operation)
    return step


def end_step(operation: Operation, step: dict, state: str, detail: str, name: str | None = None) -> None:
    """Close the running step; `name` when it turned out to be another step than planned."""
    finished = timezone.now()
    seconds = (finished - datetime.fromisoformat(step["started"])).total_seconds()
    step.update(state=state, finished=finished.isoformat(), detail=detail, seconds=round(seconds, 3))
    if name:
        step["name"] = name
    operation.steps = [*operation.steps[:-1], step]
    operation.save(update_fields=["steps"])
    announce(operation)


def finish(operation: Operation, state: str, error: str = "", log_tail: str = "") -> None:
    operation.state = state
    operation.error = error
    operation.log_tail = log_tail
    operation.finished = timezone.now()
    operation.save(update_fields=["state", "error", "log_tail", "finished"])
    announce(operation)
    record(
        f"operation.{operation.kind}.finished",
        user=operation.requested_by,
        actor=operation.trigger,
        target=f"instance {operation.instance.name}",
        reason=operation.reason,
        outcome=f"{state}: {error}" if error else state,
        operation=operation.pk,
        seconds=operation.duration,
    )
    if state == Operation.State.FAILED:
        notify(
            FAILED_OPERATION,
            operation.instance,
            f"{operation.get_kind_display()} of {operation.instance.name} failed",
            f"{error}\n\nLast log lines:\n{log_tail[-2000:]}" if log_tail else error,
            {"operation": operation.pk, "trigger": operation.trigger, "reason": operation.reason},
        )
