"""The newest sample of each instance, in one query whatever the number of instances."""

from datetime import timedelta

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from console.instances.models import Instance
from console.telemetry.models import Sample


def latest_samples(instances) -> dict[int, Sample]:
    """{instance id: its newest raw sample} for the given instances (a list or a queryset)."""
    ids = [i.pk for i in instances] if isinstance(instances, list | tuple) else instances.values("pk")
    newest = Sample.objects.filter(instance_id=OuterRef("pk"), resolution=Sample.RAW).order_by("-at")
    latest = Instance.objects.filter(pk__in=ids).annotate(latest=Subquery(newest.values("pk")[:1])).values("latest")
    return {row.instance_id: row for row in Sample.objects.filter(pk__in=latest)}


def stale_after() -> timedelta:
    """How old a sample may be and still say how the instance is (a few sampling intervals)."""
    return timedelta(seconds=max(30, 3 * settings.TELEMETRY_SAMPLE_SECONDS))


def is_fresh(sample: Sample | None, now=None) -> bool:
    return sample is not None and (now or timezone.now()) - sample.at <= stale_after()
