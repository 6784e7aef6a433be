"""Operations, rollouts and instances as plain dicts: one shape for the API, the pages, the CLI and
the browsers' live events."""

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from console.instances.holds import active_holds
from console.instances.models import Hold, Instance
from console.operations.effect import kept_latency
from console.operations.models import Operation, Rollout
from console.telemetry.latest import is_fresh, latest_samples
from console.telemetry.models import Sample


def operation_summary(operation: Operation) -> dict:
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
        "worker": operation.worker,
        "attempts": operation.attempts,
        # p95 before and after, kept once measured (the whole effect: GET /api/operations/<id>/).
        "latency_effect": kept_latency(operation),
    }


def rollout_summary(rollout: Rollout) -> dict:
    return {
        "id": rollout.pk,
        "strategy": rollout.strategy,
        "reload_weights": rollout.reload_weights,
        "skip_busy": rollout.skip_busy,
        "skip_healthy": rollout.skip_healthy,
        "instances": rollout.instance_names,
        "state": rollout.state,
        "results": rollout.results,
        "error": rollout.error,
        "trigger": rollout.trigger,
        "reason": rollout.reason,
        "created": rollout.created.isoformat(),
        "finished": rollout.finished.isoformat() if rollout.finished else None,
    }


def last_operations(instances) -> dict[int, Operation]:
    """{instance id: its newest operation}, in one query whatever the number of instances."""
    ids = [i.pk for i in instances]
    newest = Operation.objects.filter(instance_id=OuterRef("pk")).order_by("-created")
    latest = Instance.objects.filter(pk__in=ids).annotate(last=Subquery(newest.values("pk")[:1])).values("last")
    rows = Operation.objects.filter(pk__in=latest).select_related("instance", "requested_by")
    return {row.instance_id: row for row in rows}


def instance_summary(
    instance: Instance, sample: Sample | None = None, last: Operation | None = None, now=None, hold: Hold | None = None
) -> dict:
    """What the console knows of an instance: its setup; how it is, from the latest sample ("status":
    what the host's worker saw, "unknown" when no sample is fresh; "badge": what the pages show,
    "restarting" while an operation runs); that sample's figures and age; its operations; and its
    hold, while it is on hold."""
    now = now or timezone.now()
    active = last is not None and not last.is_finished
    status = sample.status if is_fresh(sample, now) else "unknown"
    return {
        "name": instance.name,
        "display_name": instance.label,
        "host": instance.host.name,
        "runtime": instance.runtime,
        "engine": instance.engine,
        "group": instance.group,
        "base_url": instance.base_url,
        "gpu_indices": instance.gpu_indices,
        "enabled": instance.enabled,
        "restart_in_place": instance.restart_in_place,
        "handover": instance.handover,
        "status": status,
        "badge": "restarting" if active else status,
        "ready": status == "ready",
        "sample": {**sample.summary(), "age_seconds": round((now - sample.at).total_seconds(), 1)} if sample else None,
        "operation": operation_summary(last) if active else None,
        "active_operation": last.pk if active else None,
        "last_operation": {"id": last.pk, "kind": last.kind, "state": last.state} if last else None,
        "hold": hold.summary() if hold is not None else None,
    }


def instance_summaries(instances) -> list[dict]:
    """instance_summary for many instances, in a fixed number of queries."""
    instances = list(instances)
    samples, operations = latest_samples(instances), last_operations(instances)
    now = timezone.now()
    holds = active_holds(instances, now)
    return [instance_summary(i, samples.get(i.pk), operations.get(i.pk), now, holds.get(i.pk)) for i in instances]
