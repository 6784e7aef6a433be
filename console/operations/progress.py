"""Recording an operation's steps and telling the browsers about them."""

from datetime import datetime

from django.utils import timezone

from console.live.events import OPERATION_UPDATED, publish
from console.operations.models import Operation


def summary(operation: Operation) -> dict:
    return {
        "id": operation.pk,
        "instance": operation.instance.name,
        "kind": operation.kind,
        "kind_display": str(operation.get_kind_display()),
        "trigger": operation.trigger,
        "state": operation.state,
        "state_display": str(operation.get_state_display()),
        "reason": operation.reason,
        "requested_by": operation.requested_by.get_username() if operation.requested_by else None,
        "steps": operation.steps,
        "error": operation.error,
        "log_tail": operation.log_tail,
        "created": operation.created.isoformat(),
        "started": operation.started.isoformat() if operation.started else None,
        "finished": operation.finished.isoformat() if operation.finished else None,
        "duration": operation.duration,
    }


def announce(operation: Operation) -> None:
    publish(operation.instance.name, OPERATION_UPDATED, summary(operation))


def begin_step(operation: Operation, name: str) -> dict:
    step = {"name": name, "state": "running", "started": timezone.now().isoformat(), "finished": None, "detail": ""}
    operation.steps = [*operation.steps, step]
    operation.save(update_fields=["steps"])
    announce(operation)
    return step


def end_step(operation: Operation, step: dict, state: str, detail: str) -> None:
    finished = timezone.now()
    seconds = (finished - datetime.fromisoformat(step["started"])).total_seconds()
    step.update(state=state, finished=finished.isoformat(), detail=detail, seconds=round(seconds, 3))
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
    from console.audit.record import record

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
        from console.alerts.notify import FAILED_OPERATION, notify

        notify(
            FAILED_OPERATION,
            operation.instance,
            f"{operation.get_kind_display()} of {operation.instance.name} failed",
            f"{error}\n\nLast log lines:\n{log_tail[-2000:]}" if log_tail else error,
            {"operation": operation.pk, "trigger": operation.trigger, "reason": operation.reason},
        )
