"""Bounded sample storage: raw samples for a day, per-minute rollups for a month."""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from console.instances.models import Instance
from console.telemetry.models import FIGURES, Sample

# Counts add up over a minute; everything else is its mean, except the
# figures an operator wants to see at their worst.
SUMMED = {"log_errors"}
WORST = {"p95_ms", "gpu_used", "close_wait", "fragmentation"}
STATUS_RANK = {"down": 0, "restarting": 1, "degraded": 2, "draining": 3, "loading": 4, "ready": 5}


def _minute(at):
    return at.replace(second=0, microsecond=0)


def rollup(now=None) -> int:
    """Write a per-minute row for every complete minute of raw samples not yet rolled up."""
    now = now or timezone.now()
    end = _minute(now)
    earliest = end - timedelta(seconds=settings.TELEMETRY_RAW_RETENTION)
    # Each instance's newest rollup through the (instance, resolution, at) index: one probe each, not a
    # pass over a month of rollups (4.3 million rows at 100 instances) every minute.
    newest = Sample.objects.filter(instance=OuterRef("pk"), resolution=Sample.MINUTE).order_by("-at").values("at")
    starts: dict = defaultdict(list)
    for instance_id, previous in Instance.objects.annotate(last=Subquery(newest[:1])).values_list("pk", "last"):
        starts[max(earliest, previous + timedelta(minutes=1)) if previous else earliest].append(instance_id)
    rows = []
    for start, ids in starts.items():  # most often one: every instance rolled up to the same minute
        buckets: dict = defaultdict(list)
        raw = Sample.objects.filter(instance_id__in=ids, resolution=Sample.RAW, at__gte=start, at__lt=end)
        for sample in raw.order_by("instance_id", "at").iterator(chunk_size=2000):
            buckets[(sample.instance_id, _minute(sample.at))].append(sample)
        rows += [_summarise(instance_id, minute, samples) for (instance_id, minute), samples in buckets.items()]
    with transaction.atomic():
        Sample.objects.bulk_create(rows, batch_size=500)
    return len(rows)


def _summarise(instance_id: int, minute, samples: list[Sample]) -> Sample:
    values = {}
    for name in FIGURES:
        present = [getattr(s, name) for s in samples if getattr(s, name) is not None]
        if not present:
            values[name] = None
        elif name in SUMMED:
            values[name] = sum(present)
        elif name in WORST:
            values[name] = max(present)
        else:
            mean = sum(present) / len(present)
            field = Sample._meta.get_field(name)
            values[name] = round(mean) if field.get_internal_type() in ("BigIntegerField", "IntegerField") else mean
    status = min((s.status for s in samples), key=lambda st: STATUS_RANK.get(st, 0))
    return Sample(
        instance_id=instance_id,
        at=minute,
        resolution=Sample.MINUTE,
        status=status,
        probe_ok=all(s.probe_ok for s in samples),
        data={"samples": len(samples)},
        **values,
    )


def prune(now=None) -> int:
    now = now or timezone.now()
    raw_cut = now - timedelta(seconds=settings.TELEMETRY_RAW_RETENTION)
    minute_cut = now - timedelta(seconds=settings.TELEMETRY_MINUTE_RETENTION)
    # Each delete a range of the (instance, resolution, at) index, not a scan of the whole table every
    # minute (a sample's instance deleted takes its samples with it). Raw samples one instance at a
    # time: for all of them at once PostgreSQL's planner takes "older than a day" to match every
    # rollup of the month too (it does not know the two columns go together) and scans the table.
    instances = list(Instance.objects.values_list("pk", flat=True))
    deleted = sum(
        Sample.objects.filter(instance_id=instance, resolution=Sample.RAW, at__lt=raw_cut).delete()[0]
        for instance in instances
    )
    more, _ = Sample.objects.filter(instance_id__in=instances, resolution=Sample.MINUTE, at__lt=minute_cut).delete()
    return deleted + more
