"""What Diagnose, the watchdog and /metrics share: one kind of finding, one idea of an instance's normal,
one reading of the disk that holds its log."""

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


def log_disk_free(disk) -> dict | None:
    """The free shares of a sample's `log_disk`: {"bytes", "inodes" (None on a file system without a
    fixed inode count, btrfs: 0 of 0), "least" (the one that runs out first)}; None where the sample has
    none (a container's) or it is not figures."""
    if not isinstance(disk, dict) or not all(type(disk.get(k)) is int for k in ("free", "total")):
        return None
    if disk["total"] <= 0:
        return None
    inodes_free, inodes_total = disk.get("inodes_free"), disk.get("inodes_total")
    inodes = (
        inodes_free / inodes_total
        if type(inodes_free) is int and type(inodes_total) is int and inodes_total > 0
        else None
    )
    free = disk["free"] / disk["total"]
    return {"bytes": free, "inodes": inodes, "least": free if inodes is None else min(free, inodes)}


def log_rotation(kept) -> dict | None:
    """A sample's `log_rotation` (the runtime's word on how the server's log is kept) as {"driver",
    "max_bytes", "files", "rotated"}: rotated is False for a log that grows without limit (Docker's
    json-file without max-size, or the console's rotation turned off), True where it is rotated or
    kept by another logging driver; None where the sample has none or it is not figures."""
    if not isinstance(kept, dict) or not isinstance(kept.get("driver"), str):
        return None
    driver, max_bytes, files = kept["driver"][:40], kept.get("max_bytes"), kept.get("files")
    if max_bytes is not None and not (type(max_bytes) is int and max_bytes > 0):
        return None
    files = files if type(files) is int and files > 0 else 1
    unlimited = max_bytes is None and driver in ("json-file", "file")
    return {"driver": driver, "max_bytes": max_bytes, "files": files, "rotated": not unlimited}


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
