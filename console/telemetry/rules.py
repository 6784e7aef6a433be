"""What Diagnose and the watchdog share: one kind of finding, one idea of an instance's normal."""

from dataclasses import dataclass, field
from datetime import timedelta
from statistics import median

from console.telemetry.models import Sample

# A fresh process's own latency is its normal: the first samples after it started.
BASELINE_SAMPLES = 20


@dataclass
class Finding:
    """One rule's view of the recent samples."""

    rule: str  # gpu_memory, processes, connections, log_tail, latency, liveness, p95_limit, ...
    level: str  # ok, warn, bad, unknown
    summary: str
    evidence: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)


def started_at(latest: Sample):
    """When the process that answered the latest sample started, or None if it did not say."""
    uptime = latest.data.get("uptime")
    if not isinstance(uptime, int | float):
        return None
    return latest.at - timedelta(seconds=uptime)


def baseline_p95(latest: Sample) -> float | None:
    """The median p95 of the first samples since the current process started: the first 20, or the
    older half of a shorter history (so a slowdown in it is not its own baseline); None with fewer
    than three."""
    started = started_at(latest)
    if started is None:
        return None
    since_start = Sample.objects.filter(
        instance_id=latest.instance_id, resolution=Sample.RAW, at__gte=started, at__lte=latest.at
    ).exclude(p95_ms=None)
    count = min(BASELINE_SAMPLES, since_start.count() // 2)
    if count < 3:
        return None
    return median(since_start.order_by("at").values_list("p95_ms", flat=True)[:count])
