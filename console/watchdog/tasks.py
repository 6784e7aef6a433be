"""The watchdog runs after each sampling round, in a task of its own (not inside the sampler)."""

import logging

from celery import shared_task

from console.instances.models import Instance, host_queue
from console.watchdog.evaluate import evaluate
from console.watchdog.models import Watchdog

log = logging.getLogger(__name__)


def after_samples(sender, host_name: str, instance_ids: list[int], **kwargs) -> None:
    """Receiver of telemetry's samples_recorded: evaluate the watched instances among them."""
    watched = Watchdog.objects.filter(instance_id__in=instance_ids, enabled=True)
    ids = list(watched.values_list("instance_id", flat=True))
    if ids:
        evaluate_instances.apply_async(args=[ids], queue=host_queue(host_name))


@shared_task(ignore_result=True, acks_late=False)
def evaluate_instances(instance_ids: list[int]) -> int:
    """Evaluate each instance's watchdog on its fresh samples; returns how many acted or alerted.

    Not acks_late: a round lost with its worker is evaluated again after the next samples.
    """
    acted = 0
    for instance in Instance.objects.filter(pk__in=instance_ids).select_related("host"):
        try:
            acted += evaluate(instance) is not None
        except Exception:  # one instance's failure never stops the others'
            log.exception("watchdog of %s failed", instance.name)
    return acted
