"""What an operation changed: the figures the runbook blames for a slow server (latency, GPU memory
and its fragmentation, host memory, file descriptors, CLOSE_WAIT), before it against after it.

An operator who restarts a slow instance wants to know whether the restart helped: if latency is as
high after a clean start, the slowness is not decay a restart fixes (load, input sizes, the GPU
itself). Read from the samples: the median of each figure over the minutes before the operation began,
and over as many after it ended, from a short settling time on (a new process's warm-up is not its
steady state): OPERATION_EFFECT_WINDOW_SECONDS and OPERATION_EFFECT_SETTLE_SECONDS. Once the window
after has passed, `settle` keeps the p95 figures on the operation: lists and Prometheus read those,
and they outlive the samples (raw for a day, per-minute rollups for a month).
"""

from datetime import timedelta
from statistics import median

from django.conf import settings
from django.db.models import Q
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


def _read(instance, spans, names) -> list[tuple]:
    """(resolution, at, *figures) of the instance's samples in the [start, end) spans, in one query:
    only those, however far apart the spans are (a month of operations is not a month of samples)."""
    parts = [
        # Each part a range of the (instance, resolution, at) index.
        Sample.objects.filter(instance=instance, resolution=resolution, at__gte=start, at__lt=end)
        .order_by()
        .values_list("resolution", "at", *names)
        for start, end in spans
        for resolution in (Sample.RAW, Sample.MINUTE)
    ]
    return list(parts[0].union(*parts[1:], all=True)) if parts else []


def _window(rows: list[tuple], start, end) -> list[tuple]:
    """The rows in [start, end): raw samples where they are still kept, else the per-minute rollups
    (raw samples are pruned after a day, by default)."""
    for resolution in (Sample.RAW, Sample.MINUTE):
        chosen = [row for row in rows if row[0] == resolution and start <= row[1] < end]
        if chosen:
            return chosen
    return []


def _median(rows: list[tuple], column: int):
    values = [row[column] for row in rows if row[column] is not None]
    return median(values) if values else None


def _verdict(before, after, unit: str) -> str | None:
    if before is None or after is None:
        return None
    if abs(after - before) < max(FLOORS[unit], CHANGE * abs(before)):
        return "same"
    return "lower" if after < before else "higher"


def _applies(operation: Operation) -> bool:
    return (
        operation.state == Operation.State.SUCCEEDED
        and operation.kind in KINDS
        and operation.started is not None
        and operation.finished is not None
    )


def _windows(operation: Operation, now) -> tuple:
    """The operation's window before, the window after as read so far (it ends now while measured),
    and when the window after ends: ((start, end), (start, end), end)."""
    window = timedelta(seconds=settings.OPERATION_EFFECT_WINDOW_SECONDS)
    after_from = operation.finished + timedelta(seconds=settings.OPERATION_EFFECT_SETTLE_SECONDS)
    after_until = after_from + window
    return (operation.started - window, operation.started), (after_from, min(after_until, now)), after_until


def kept_latency(operation: Operation) -> dict | None:
    """The p95 figures kept on a settled operation, as `with_latency_effects` gives them; None before it
    is settled, or where it had none."""
    before, after = operation.p95_before_ms, operation.p95_after_ms
    if operation.effect_settled is None or (before is None and after is None):
        return None
    return {"before": before, "after": after, "change": operation.p95_change or None}


def effect(operation: Operation, now=None) -> dict | None:
    """Before against after for a restart or soft reset that succeeded; None for any other.
    `measuring` until the window after it has passed (the figures so far until then)."""
    if not _applies(operation):
        return None
    now = now or timezone.now()
    (before_from, before_until), (after_from, after_until), measured_until = _windows(operation, now)
    rows = _read(operation.instance, [(before_from, before_until), (after_from, after_until)], [n for n, _ in FIGURES])
    before, after = _window(rows, before_from, before_until), _window(rows, after_from, after_until)
    figures = []
    for column, (name, unit) in enumerate(FIGURES, start=2):
        was, now_is = _median(before, column), _median(after, column)
        if was is not None or now_is is not None:
            figures.append(
                {"name": name, "unit": unit, "before": was, "after": now_is, "change": _verdict(was, now_is, unit)}
            )
    if operation.effect_settled is not None:
        # The kept p95, as the lists show it, even once the raw samples it was read from are pruned.
        figures = [row for row in figures if row["name"] != "p95_ms"]
        if (kept := kept_latency(operation)) is not None:
            figures.insert(0, {"name": "p95_ms", "unit": "ms", **kept})
    return {
        "measuring": now < measured_until,
        "window_seconds": settings.OPERATION_EFFECT_WINDOW_SECONDS,
        "settle_seconds": settings.OPERATION_EFFECT_SETTLE_SECONDS,
        "before": {"from": before_from.isoformat(), "until": before_until.isoformat(), "samples": len(before)},
        "after": {"from": after_from.isoformat(), "until": measured_until.isoformat(), "samples": len(after)},
        "figures": figures,
    }


def with_latency_effects(instance, operations, now=None) -> list:
    """`operations` (of `instance`), each given `latency_effect`: its p95 before and after, and the
    change, where it has one; from one read of the instance's samples, for a table of operations."""
    operations = list(operations)
    for operation in operations:
        operation.latency_effect = kept_latency(operation)
    judged = [operation for operation in operations if _applies(operation) and operation.effect_settled is None]
    if not judged:
        return operations
    now = now or timezone.now()
    spans = {operation.pk: _windows(operation, now)[:2] for operation in judged}
    rows = _read(instance, [span for pair in spans.values() for span in pair], ["p95_ms"])
    for operation in judged:
        before, after = (_median(_window(rows, *span), 2) for span in spans[operation.pk])
        if before is not None or after is not None:
            operation.latency_effect = {"before": before, "after": after, "change": _verdict(before, after, "ms")}
    return operations


def settle(now=None, batch: int = 200) -> int:
    """Keep the p95 before and after on each restart or soft reset whose window after has passed (beat's
    minute round), `batch` at a time, one read of samples per instance. Newest first: the history of a
    console just upgraded (a year of restarts, most with no samples left) is worked through behind
    the night's restarts, whose report waits on them (console.schedules.report)."""
    now = now or timezone.now()
    passed = now - timedelta(
        seconds=settings.OPERATION_EFFECT_SETTLE_SECONDS + settings.OPERATION_EFFECT_WINDOW_SECONDS
    )
    unsettled = Q(effect_settled=None, state=Operation.State.SUCCEEDED, kind__in=KINDS)  # the partial index's
    due = list(
        Operation.objects.filter(unsettled, finished__lte=passed)
        .exclude(started=None)
        .select_related("instance")
        .order_by("-finished")[:batch]
    )
    effects = latency_effects(due, now)
    for operation in due:
        kept = effects.get(operation.pk, {})
        operation.p95_before_ms, operation.p95_after_ms = kept.get("before"), kept.get("after")
        operation.p95_change = kept.get("change") or ""
        operation.effect_settled = now
    # Not save(): a finished operation is not edited, and these fields are not its record.
    Operation.objects.bulk_update(due, ["p95_before_ms", "p95_after_ms", "p95_change", "effect_settled"])
    return len(due)


def latency_effects(operations, now=None) -> dict[int, dict]:
    """{operation id: its p95 before and after, and the change} for those of the operations (of any
    instances, each with its instance loaded) that have one: one read of samples per instance."""
    by_instance: dict = {}
    for operation in operations:
        by_instance.setdefault(operation.instance, []).append(operation)
    return {
        operation.pk: operation.latency_effect
        for instance, of_instance in by_instance.items()
        for operation in with_latency_effects(instance, of_instance, now)
        if operation.latency_effect is not None
    }


def rollout_effects(rollout) -> dict:
    """Once a rollout (a schedule's run) has ended: its results, each with its restart's p95 before and
    after, and on how many instances the restart lowered it (is the nightly restart doing anything?)."""
    if not rollout.is_finished:
        return {}
    effects = latency_effects(Operation.objects.filter(pk__in=rollout.operation_ids).select_related("instance"))
    return {
        "results": [{**r, "latency_effect": effects.get(r.get("operation"))} for r in rollout.results],
        "lowered": sum(1 for e in effects.values() if e["change"] == "lower"),
        "judged": sum(1 for e in effects.values() if e["change"] is not None),
    }
