"""Restarting several instances: rolling (the next only once the previous is ready) or all at once.

A rollout is resumable: run again after its worker was lost, it picks up the
operations it already started (linked to it) instead of starting them twice.
A failed restart stops a rolling rollout, so a bad image or config never takes
down more than one replica.
"""

import time

from django.db import close_old_connections, transaction
from django.utils import timezone

from console.audit.record import record
from console.instances.models import Instance
from console.operations.models import Operation, Rollout
from console.operations.request import OperationRefused, request_operation
from console.telemetry.latest import is_fresh, latest_samples


def request_rollout(
    instances: list[Instance],
    *,
    strategy: str = Rollout.Strategy.ROLLING,
    user=None,
    reason: str = "",
    trigger: str = Operation.Trigger.MANUAL,
    skip_busy: bool = False,
    request=None,
) -> Rollout:
    """Queue a restart of `instances`; callers have validated them (RolloutForm, a schedule's targets)."""
    if not instances or strategy not in Rollout.Strategy.values:
        raise ValueError(f"a rollout needs instances and a known strategy, not {len(instances)} and {strategy!r}")
    rollout = Rollout.objects.create(
        strategy=strategy,
        instance_names=[i.name for i in instances],
        skip_busy=skip_busy,
        trigger=trigger,
        requested_by=user if user is not None and user.is_authenticated else None,
        reason=reason[:500],
    )
    record(
        "rollout.requested",
        request=request,
        user=user,
        actor=trigger,
        target=", ".join(rollout.instance_names),
        reason=reason,
        outcome=f"queued as rollout #{rollout.pk} ({strategy})",
    )
    transaction.on_commit(lambda: enqueue_rollout(rollout))
    return rollout


def enqueue_rollout(rollout: Rollout) -> None:
    from console.operations.tasks import run_rollout  # tasks imports this module

    run_rollout.apply_async(args=[rollout.pk])


def busy(instance: Instance) -> int:
    """Requests in flight per the latest fresh sample (0 if unknown): the host worker measured it."""
    sample = latest_samples([instance]).get(instance.pk)
    return (sample.in_flight or 0) if is_fresh(sample) else 0


def _budget(instance: Instance) -> float:
    """The longest a restart of this instance may take before the rollout stops waiting."""
    return instance.drain_timeout + instance.stop_timeout + instance.ready_timeout + 120


def _record(rollout: Rollout, name: str, operation: Operation | None, state: str, detail: str = "") -> None:
    entry = {"instance": name, "operation": operation.pk if operation else None, "state": state, "detail": detail}
    names = [r["instance"] for r in rollout.results]
    if name in names:
        rollout.results[names.index(name)] = entry
    else:
        rollout.results.append(entry)
    rollout.save(update_fields=["results"])


def _start(rollout: Rollout, instance: Instance) -> Operation | None:
    """The rollout's operation for this instance: the one it already has, or a new one."""
    existing = rollout.operations.filter(instance=instance).order_by("-created").first()
    if existing is not None:
        return existing
    if rollout.skip_busy and (in_flight := busy(instance)):
        _record(rollout, instance.name, None, "skipped", f"{in_flight} request(s) in flight")
        return None
    try:
        operation, created = request_operation(
            instance,
            Operation.Kind.RESTART,
            user=rollout.requested_by,
            reason=rollout.reason or f"rollout #{rollout.pk}",
            trigger=rollout.trigger,
            rollout=rollout,
        )
    except OperationRefused as exc:
        _record(rollout, instance.name, None, "skipped", str(exc))
        return None
    detail = "" if created else f"joined restart #{operation.pk} already in progress"
    _record(rollout, instance.name, operation, operation.state, detail)
    return operation


def _wait(rollout: Rollout, operation: Operation, poll: float) -> Operation:
    deadline = time.monotonic() + _budget(operation.instance)
    while True:
        operation.refresh_from_db()
        if operation.is_finished or time.monotonic() > deadline:
            break
        close_old_connections()
        time.sleep(poll)
    if not operation.is_finished:
        _record(rollout, operation.instance.name, operation, "failed", "did not finish within its timeouts")
    else:
        _record(rollout, operation.instance.name, operation, operation.state, operation.error)
    return operation


def execute_rollout(rollout_id: int, poll: float = 0.5) -> Rollout | None:
    rollout = Rollout.objects.filter(pk=rollout_id).first()
    if rollout is None or rollout.is_finished:
        return rollout
    if rollout.state == Rollout.State.QUEUED:
        rollout.state, rollout.started = Rollout.State.RUNNING, timezone.now()
        rollout.save(update_fields=["state", "started"])
    by_name = {i.name: i for i in Instance.objects.filter(name__in=rollout.instance_names).select_related("host")}
    missing = [name for name in rollout.instance_names if name not in by_name]
    for name in missing:
        _record(rollout, name, None, "skipped", "no such instance any more")
    ordered = [by_name[name] for name in rollout.instance_names if name in by_name]
    failed = None
    if rollout.strategy == Rollout.Strategy.ALL:
        started = [op for op in (_start(rollout, i) for i in ordered) if op is not None]
        for operation in started:
            if _wait(rollout, operation, poll).state != Operation.State.SUCCEEDED:
                failed = failed or operation
    else:
        for instance in ordered:
            if rollout.not_after and timezone.now() >= rollout.not_after:
                _record(rollout, instance.name, None, "not started", "the maintenance window has closed")
                continue
            operation = _start(rollout, instance)
            if operation is None:
                continue
            if _wait(rollout, operation, poll).state != Operation.State.SUCCEEDED:
                failed = operation
                left = ordered[ordered.index(instance) + 1 :]
                for rest in left:
                    _record(rollout, rest.name, None, "not started", f"stopped after {instance.name} failed")
                break
    rollout.refresh_from_db()
    if failed is not None:
        rollout.state = Rollout.State.FAILED
        rollout.error = f"{failed.instance.name}: {failed.error or failed.state}"
    else:
        rollout.state = Rollout.State.SUCCEEDED
    rollout.finished = timezone.now()
    rollout.save(update_fields=["state", "error", "finished"])
    return rollout
