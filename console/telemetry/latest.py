"""The newest sample of each instance: what pages show before live updates arrive."""

from console.telemetry.models import Sample


def latest_samples(instances) -> dict[int, Sample]:
    latest = {}
    for instance in instances:
        sample = Sample.objects.filter(instance=instance, resolution=Sample.RAW).order_by("-at").first()
        if sample is not None:
            latest[instance.pk] = sample
    return latest
