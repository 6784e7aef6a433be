"""What the console says about an instance, in one place for pages and API."""

from console.operations.models import Operation


def instance_summary(instance) -> dict:
    active = instance.operations.filter(state__in=Operation.ACTIVE_STATES).first()
    last = instance.operations.first()
    return {
        "name": instance.name,
        "display_name": instance.label,
        "host": instance.host.name,
        "runtime": instance.runtime,
        "group": instance.group,
        "base_url": instance.base_url,
        "gpu_indices": instance.gpu_indices,
        "enabled": instance.enabled,
        "restart_in_place": instance.restart_in_place,
        "active_operation": active.pk if active else None,
        "last_operation": {"id": last.pk, "kind": last.kind, "state": last.state} if last else None,
    }
