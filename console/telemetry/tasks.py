"""Celery tasks for telemetry: sampling fans out to each host's queue; rollups run anywhere."""

from celery import shared_task
from django.conf import settings

from console.instances.models import Host, host_queue
from console.telemetry import retention, sampler


@shared_task(ignore_result=True)
def sample_all() -> int:
    """Ask every host's worker for one sampling round (dropped if not taken within one interval of
    its turn); a host without instances reports too, so that its page says whether its worker lives.

    The hosts take turns spread over the interval rather than all at its start: the console relays
    each host's round as it comes, so its work (and the dashboards' events) is spread evenly instead
    of every host's batches arriving at one instant (docs/BENCHMARKS.md, scale)."""
    every = settings.TELEMETRY_SAMPLE_SECONDS
    hosts = list(Host.objects.order_by("name").values_list("name", flat=True))
    for turn, name in enumerate(hosts):
        offset = every * turn / len(hosts)
        sample_host.apply_async(args=[name], queue=host_queue(name), countdown=offset, expires=offset + every)
    return len(hosts)


# Not acks_late: a sampling round lost with its worker is simply the next one.
@shared_task(ignore_result=True, acks_late=False)
def sample_host(host_name: str) -> int:
    return sampler.sample_host(host_name)


@shared_task(ignore_result=True)
def rollup_and_prune() -> dict:
    return {"rolled_up": retention.rollup(), "pruned": retention.prune()}
