"""Restarting several instances: rolling (the next only once the previous is ready) or all at once.

A rollout is a small state machine in the database, advanced by short tasks (`advance`): when it
is requested, each time one of its operations finishes, and by the minute recovery round. No task
waits for a restart, so no worker thread is held while a replica restarts, and a message delivered
twice, or a worker that died mid-rollout, only means one more look at the same rows. A failed
restart stops a rolling rollout, so a bad image or config never takes down more than one replica.
"""

from django.db import transaction
from django.utils import timezone

from console.audit.record import record
from console.instances.holds import active_hold
from console.instances.models import Instance
from console.operations.models import Operation, Rollout
from console.operations.need import healthy
from console.operations.request import OperationRefused, request_operation
from console.telemetry.latest import is_fresh, latest_samples

SETTLED = ("skipped", "not started")  # entries of instances the rollout will not restart


def request_rollout(
    instances: list[Instance],
    *,
    strategy: str = Rollout.Strategy.ROLLING,
    user=None,
    reason: str = "",
    trigger: str = Operation.Trigger.MANUAL,
    skip_busy: bool = False,
    reload_weights: bool = False,
    skip_healthy: bool = False,
    request=None,
) -> Rollout:
    """Queue a restart of `instances`; callers have validated them (RolloutForm, a schedule's targets)."""
    if not instances or strategy not in Rollout.Strategy.values:
        raise ValueError(f"a rollout needs instances and a known strategy, not {len(instances)} and {strategy!r}")
    rollout = Rollout.objects.create(
        strategy=strategy,
        instance_names=[i.name for i in instances],
        skip_busy=skip_busy,
        reload_weights=reload_weights,
        skip_healthy=skip_healthy,
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
        outcome=f"queued as rollout #{rollout.pk} ({', '.join(_options(rollout))})",
    )
    transaction.on_commit(lambda: enqueue_advance(rollout.pk))
    return rollout


def _options(rollout: Rollout) -> list[str]:
    chosen = [rollout.strategy]
    chosen += ["skipping busy instances"] if rollout.skip_busy else []
    chosen += ["skipping healthy instances"] if rollout.skip_healthy else []
    chosen += ["reloading the weights"] if rollout.reload_weights else []
    return chosen


def enqueue_advance(rollout_id: int) -> None:
    from console.operations.tasks import advance_rollout  # tasks imports this module

    advance_rollout.apply_async(args=[rollout_id])


def busy(instance: Instance) -> int:
    """Requests in flight per the latest fresh sample (0 if unknown): the host worker measured it."""
    sample = latest_samples([instance]).get(instance.pk)
    return (sample.in_flight or 0) if is_fresh(sample) else 0


def _record(rollout: Rollout, name: str, operation: Operation | None, state: str, detail: str = "") -> None:
    entry = {"instance": name, "operation": operation.pk if operation else None, "state": state, "detail": detail}
    names = [r["instance"] for r in rollout.results]
    if name in names:
        rollout.results[names.index(name)] = entry
    else:
        rollout.results.append(entry)


def _operation_of(rollout: Rollout, instance: Instance, entry: dict | None) -> Operation | None:
    """The operation this rollout started or joined for the instance, if any."""
    if entry and entry.get("operation"):
        return Operation.objects.filter(pk=entry["operation"]).first()
    return rollout.operations.filter(instance=instance).order_by("-created").first()


def _start(rollout: Rollout, instance: Instance) -> Operation | None:
    """Restart the instance for the rollout (or join its restart already running); None if skipped."""
    hold = active_hold(instance)
    if hold is not None:
        _record(rollout, instance.name, None, "skipped", hold.said())
        return None
    if rollout.skip_busy and (in_flight := busy(instance)):
        _record(rollout, instance.name, None, "skipped", f"{in_flight} request(s) in flight")
        return None
    if rollout.skip_healthy and (why := healthy(instance)):
        _record(rollout, instance.name, None, "skipped", why)
        return None
    try:
        operation, created = request_operation(
            instance,
            Operation.Kind.RESTART,
            user=rollout.requested_by,
            reason=rollout.reason or f"rollout #{rollout.pk}",
            trigger=rollout.trigger,
            options={"reload_weights": True} if rollout.reload_weights else None,
            rollout=rollout,
        )
    except OperationRefused as exc:
        _record(rollout, instance.name, None, "skipped", str(exc))
        return None
    detail = "" if created else f"joined restart #{operation.pk} already in progress"
    if not created and rollout.reload_weights and not operation.options.get("reload_weights"):
        detail += " (it keeps the weights: not reloaded)"
    _record(rollout, instance.name, operation, operation.state, detail)
    return operation


def _follow(rollout: Rollout, instance: Instance, entries: dict) -> Operation | None:
    """The instance's operation, started now if it has none yet; recorded as it stands."""
    entry = entries.get(instance.name)
    operation = _operation_of(rollout, instance, entry)
    if operation is None:
        return _start(rollout, instance)
    # A finished operation's error, else what was said of it (a joined restart that keeps the weights)
    detail = (operation.is_finished and operation.error) or (entry or {}).get("detail", "")
    _record(rollout, instance.name, operation, operation.state, detail)
    return operation


def advance(rollout_id: int) -> Rollout | None:
    """Take the rollout one step further from what the database says now; returns it."""
    with transaction.atomic():
        rollout = Rollout.objects.select_for_update(of=("self",)).filter(pk=rollout_id).first()
        if rollout is None or rollout.is_finished:
            return rollout
        if rollout.state == Rollout.State.QUEUED:
            rollout.state, rollout.started = Rollout.State.RUNNING, timezone.now()
        by_name = {i.name: i for i in Instance.objects.filter(name__in=rollout.instance_names).select_related("host")}
        entries = {r["instance"]: r for r in rollout.results}
        for name in rollout.instance_names:
            if name not in by_name and name not in entries:
                _record(rollout, name, None, "skipped", "no such instance any more")
        ordered = [
            by_name[n]
            for n in rollout.instance_names
            if n in by_name and entries.get(n, {}).get("state") not in SETTLED
        ]
        failed = (
            _advance_all(rollout, ordered, entries)
            if rollout.strategy == Rollout.Strategy.ALL
            else _advance_rolling(rollout, ordered, entries)
        )
        if failed is not False:  # False: still waiting for an operation
            rollout.state = Rollout.State.FAILED if failed else Rollout.State.SUCCEEDED
            rollout.error = f"{failed.instance.name}: {failed.error or failed.state}" if failed else ""
            rollout.finished = timezone.now()
        rollout.save(update_fields=["state", "started", "results", "error", "finished"])
    return rollout


def _advance_all(rollout: Rollout, ordered: list[Instance], entries: dict):
    """Start every restart at once; done when all have ended. Returns False while waiting, else the
    first failed operation or None."""
    operations = [op for op in (_follow(rollout, i, entries) for i in ordered) if op is not None]
    if any(not op.is_finished for op in operations):
        return False
    return next((op for op in operations if op.state != Operation.State.SUCCEEDED), None)


def _advance_rolling(rollout: Rollout, ordered: list[Instance], entries: dict):
    """One restart at a time, each ready before the next starts; the first failure stops the rest."""
    for position, instance in enumerate(ordered):
        entry = entries.get(instance.name)
        if entry is None and rollout.not_after and timezone.now() >= rollout.not_after:
            _record(rollout, instance.name, None, "not started", "the maintenance window has closed")
            continue
        operation = _follow(rollout, instance, entries)
        if operation is None:
            continue  # skipped
        if not operation.is_finished:
            return False
        if operation.state != Operation.State.SUCCEEDED:
            for rest in ordered[position + 1 :]:
                _record(rollout, rest.name, None, "not started", f"stopped after {instance.name} failed")
            return operation
    return None
