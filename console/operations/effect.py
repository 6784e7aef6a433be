"""What an operation changed: the figures the runbook blames for a slow server (latency, GPU memory
and its fragmentation, host memory, file descriptors, CLOSE_WAIT), before it against after it.

An operator who restarts a slow instance wants to know whether the restart helped: if latency is as
high after a clean start, the slowness is not decay a restart fixes (load, input sizes, the GPU
itself). Read from the samples at each request, nothing stored: the median of each figure over the
minutes before the operation began, and over as many after it ended, from a short settling time on
(a new process's warm-up is not its steady state): OPERATION_EFFECT_WINDOW_SECONDS and
OPERATION_EFFECT_SETTLE_SECONDS.
"""

from datetime import timedelta
from statistics import median

from django.conf import settings
from django.utils import timezone

from console.operations.models import Operation
from console.telemetry.models import Sample

# (field, unit): lower is better for each.
FIGURES = (
    ("p95_ms", "ms"),
    ("ttft_ms", "ms"),
    ("gpu_used", "bytes"),
    ("reserved", "bytes"),
    ("fragmentation", "fraction"),
    ("rss", "bytes"),
    ("fds", "count"),
    ("close_wait", "count"),
)
# A change smaller than this share of the figure (or than a floor in its unit) is noise, not an effect.
CHANGE = 0.10
FLOORS = {"ms": 5.0, "bytes": 64 * 2**20, "fraction": 0.02, "count": 2}
KINDS = (Operation.Kind.RESTART, Operation.Kind.SOFT_RESET)  # a start has no "before": the instance was down


def _medians(instance, start, end) -> tuple[dict, int]:
    """Each figure's median over the instance's samples in [start, end), and how many samples; raw
    samples where they are still kept, else the per-minute rollups (older than a day, by default)."""
    for resolution in (Sample.RAW, Sample.MINUTE):
        rows = list(
            Sample.objects.filter(instance=instance, resolution=resolution, at__gte=start, at__lt=end).values_list(
                *(name for name, _ in FIGURES)
            )
        )
        if rows:
            break
    medians = {}
    for index, (name, _) in enumerate(FIGURES):
        values = [row[index] for row in rows if row[index] is not None]
        medians[name] = median(values) if values else None
    return medians, len(rows)


def _verdict(before, after, unit: str) -> str | None:
    if before is None or after is None:
        return None
    if abs(after - before) < max(FLOORS[unit], CHANGE * abs(before)):
        return "same"
    return "lower" if after < before else "higher"


def effect(operation: Operation, now=None) -> dict | None:
    """Before against after for a restart or soft reset that succeeded; None for any other.
    `measuring` until the window after it has passed (the figures so far until then)."""
    if operation.state != Operation.State.SUCCEEDED or operation.kind not in KINDS:
        return None
    if operation.started is None or operation.finished is None:
        return None
    now = now or timezone.now()
    window = timedelta(seconds=settings.OPERATION_EFFECT_WINDOW_SECONDS)
    after_from = operation.finished + timedelta(seconds=settings.OPERATION_EFFECT_SETTLE_SECONDS)
    after_until = after_from + window
    before, before_count = _medians(operation.instance, operation.started - window, operation.started)
    after, after_count = _medians(operation.instance, after_from, min(after_until, now))
    return {
        "measuring": now < after_until,
        "window_seconds": settings.OPERATION_EFFECT_WINDOW_SECONDS,
        "settle_seconds": settings.OPERATION_EFFECT_SETTLE_SECONDS,
        "before": {
            "from": (operation.started - window).isoformat(),
            "until": operation.started.isoformat(),
            "samples": before_count,
        },
        "after": {"from": after_from.isoformat(), "until": after_until.isoformat(), "samples": after_count},
        "figures": [
            {
                "name": name,
                "unit": unit,
                "before": before[name],
                "after": after[name],
                "change": _verdict(before[name], after[name], unit),
            }
            for name, unit in FIGURES
            if before[name] is not None or after[name] is not None
        ],
    }
