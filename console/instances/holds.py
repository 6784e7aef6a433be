"""Which instances are on hold (models.Hold): read by the watchdog, rollouts, alerts and pages."""

from datetime import datetime

from django.utils import timezone

from console.instances.models import Hold


def active_hold(instance, now=None) -> Hold | None:
    """The instance's hold if it holds now."""
    return Hold.objects.filter(instance=instance, until__gt=now or timezone.now()).first()


def active_holds(instances, now=None) -> dict[int, Hold]:
    """{instance id: its hold} for those of `instances` on hold now, in one query."""
    holds = Hold.objects.filter(instance__in=instances, until__gt=now or timezone.now())
    return {hold.instance_id: hold for hold in holds}


def last_hold_end(instance, now=None) -> datetime | None:
    """When the instance's latest hold ended, if it has ended: the watchdog judges only what came after."""
    hold = Hold.objects.filter(instance=instance, until__lte=now or timezone.now()).first()
    return hold.until if hold else None
