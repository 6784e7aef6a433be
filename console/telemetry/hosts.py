"""Whether each host's worker lives, from the age of its last report, and what its GPUs hold."""

from django.db.models import Count, Q
from django.utils import timezone

from console.instances.models import Host
from console.telemetry.latest import stale_after


def host_summary(host: Host, now=None) -> dict:
    """A host as pages and the API show it. Online: its worker reported within a few sampling
    intervals (the same window in which a sample still says how an instance is)."""
    now = now or timezone.now()
    age = (now - host.seen_at).total_seconds() if host.seen_at else None
    return {
        "name": host.name,
        "queue": host.queue,
        "online": age is not None and age <= stale_after().total_seconds(),
        "seen_at": host.seen_at.isoformat() if host.seen_at else None,
        "seen_age_seconds": round(age, 1) if age is not None else None,
        "instances": getattr(host, "instance_count", None),
        "enabled_instances": getattr(host, "enabled_count", None),
        "gpus": host.gpus,
        "nvml": host.nvml,
        "reported_by": host.reported_by,
    }


def hosts_with_counts():
    """Every host with its instance counts, in one query."""
    return Host.objects.annotate(
        instance_count=Count("instances"), enabled_count=Count("instances", filter=Q(instances__enabled=True))
    ).order_by("name")


def host_summaries(hosts=None) -> list[dict]:
    now = timezone.now()
    return [host_summary(host, now) for host in (hosts if hosts is not None else hosts_with_counts())]
