"""The newest sample of each instance, in one query whatever the number of instances."""

from django.db.models import OuterRef, Subquery

from console.instances.models import Instance
from console.telemetry.models import Sample


def latest_samples(instances) -> dict[int, Sample]:
    """{instance id: its newest raw sample} for the given instances (a list or a queryset)."""
    ids = [i.pk for i in instances] if isinstance(instances, list | tuple) else instances.values("pk")
    newest = Sample.objects.filter(instance_id=OuterRef("pk"), resolution=Sample.RAW).order_by("-at")
    latest = Instance.objects.filter(pk__in=ids).annotate(latest=Subquery(newest.values("pk")[:1])).values("latest")
    return {row.instance_id: row for row in Sample.objects.filter(pk__in=latest)}
