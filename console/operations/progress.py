"""Recording an operation's steps and telling the browsers about them.

Every write is fenced by the attempt that owns the operation (`Operation.attempts`, counted by each
claim): a worker whose operation was taken over (its heartbeat went stale while it lived, a
database outage say) finds its writes refused with `Fenced` and stops, so two workers never drive
one instance.
"""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from console.alerts.notify import FAILED_OPERATION, notify
from console.audit.record import record
from console.live.events import OPERATION_UPDATED, publish
from console.operations.models import Operation
from console.operations.summaries import operation_summary
from console.sentences import said


class Fenced(Exception):
    """This worker's attempt no longer owns the operation: another attempt took it over."""


def announce(operation: Operation) -> None:
    publish(operation.instance.name, OPERATION_UPDATED, operation_summary(operation))


def _write(operation: Operation, **fields) -> None:
    """Write the fields if this attempt still owns the operation in the state it knows it in."""
    owned = Operation.objects.filter(pk=operation.pk, attempts=operation.attempts, state=operation.state)
    if not owned.update(**fields):
        raise Fenced(f"operation #{operation.pk} is no longer attempt {operation.attempts}'s ({operation.state})")
    for name, value in fields.items():
        setattr(operation, name, value)


def write_steps(operation: Operation, steps: list[dict]) -> None:
    _write(operation, steps=steps)


def begin_step(operation: Operation, name: str) -> dict:
    step = {
        "name": str(name),
        "state": "running",
        "started": timezone.now().isoformat(),
        "finished": None,
        "detail": "",
    }
    step["name_said"] = said(name)
    _write(operation, steps=[*operation.steps, step])
    announce(operation)
    return step


def note_step(operation: Operation, detail) -> None:
    """What a long step has done so far, on the pages while it runs."""
    step = {**operation.steps[-1], "detail": str(detail), "said": said(detail)}
    _write(operation, steps=[*operation.steps[:-1], step])
    announce(operation)


def end_step(operation: Operation, step: dict, state: str, detail: str, name: str | None = None) -> None:
    """Close the running step; `name` when it turned out to be another step than planned."""
    finished = timezone.now()
    seconds = (finished - datetime.fromisoformat(step["started"])).total_seconds()
    step = {
        **step,
        "state": state,
        "finished": finished.isoformat(),
        "detail": str(detail),
        "seconds": round(seconds, 3),
    }
    step["said"] = said(detail)  # the detail in the reader's language, on the pages
    if name:
        step["name"], step["name_said"] = str(name), said(name)
    _write(operation, steps=[*operation.steps[:-1], step])
    announce(operation)


def finish(operation: Operation, state: str, error: str = "", log_tail: str = "") -> None:
    """End the operation (raises Fenced if another attempt owns it now); audit, alert, and tell the
    rollout it belongs to."""
    _write(
        operation,
        state=state,
        error=str(error),
        error_said=said(error) if error else None,
        log_tail=log_tail,
        finished=timezone.now(),
    )
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
    if operation.rollout_id:
        transaction.on_commit(lambda: _advance(operation.rollout_id))


def _advance(rollout_id: int) -> None:
    from console.operations.tasks import advance_rollout  # tasks imports this module

    advance_rollout.apply_async(args=[rollout_id])
