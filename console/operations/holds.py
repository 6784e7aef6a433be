"""Putting an instance on hold and ending the hold: checked, audited, and told to every open page."""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from console.audit.record import record
from console.instances.holds import active_hold
from console.instances.models import Hold
from console.live import events

MAX_MINUTES = 7 * 24 * 60
DURATIONS = (30, 60, 120, 240, 480, 1440)  # what the page offers, in minutes


class HoldRefused(ValueError):
    """What is wrong with a hold asked for, in a sentence for the operator."""


def place_hold(instance, *, minutes, reason, user=None, actor: str = "", request=None) -> Hold:
    """Hold the instance for `minutes` from now (a hold already on it is replaced), placed by `user`,
    or by `actor` where no account asks (the command line)."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_MINUTES:
        raise HoldRefused(f"Give the hold's length in minutes, a whole number from 1 to {MAX_MINUTES} (7 days).")
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason or len(reason) > 300:
        raise HoldRefused("Say why the instance is on hold, in at most 300 characters.")
    now = timezone.now()
    placed_by = user.get_username() if user is not None and user.is_authenticated else actor or "anonymous"
    with transaction.atomic():
        hold, _ = Hold.objects.update_or_create(
            instance=instance,
            defaults={
                "until": now + timedelta(minutes=minutes),
                "reason": reason,
                "placed_by": placed_by,
                "placed": now,
            },
        )
        record(
            "instance.held",
            request=request,
            user=user,
            actor=actor,
            target=f"instance {instance.name}",
            reason=reason,
            outcome=f"on hold until {hold.until:%Y-%m-%d %H:%M} UTC ({minutes} min)",
        )
    summary = hold.summary()
    transaction.on_commit(lambda: events.publish(instance.name, events.HOLD, summary))
    return hold


def end_hold(instance, *, user=None, actor: str = "", request=None) -> Hold | None:
    """End the instance's hold now; None when it was not on hold."""
    with transaction.atomic():
        hold = active_hold(instance)
        if hold is None:
            return None
        hold.until = timezone.now()
        hold.save(update_fields=["until"])
        record(
            "instance.hold_ended",
            request=request,
            user=user,
            actor=actor,
            target=f"instance {instance.name}",
            outcome="ended",
        )
    transaction.on_commit(lambda: events.publish(instance.name, events.HOLD, {"until": None}))
    return hold


def place_holds(instances, *, minutes, reason, user=None, actor: str = "", request=None) -> list[Hold]:
    """Hold every one of `instances` (a host's, for work on the machine itself: a driver upgrade, a
    card swapped) for the same time and reason: all or none. Each instance's hold is its own, audited
    and shown like one placed alone; an instance registered on the host later is not held."""
    instances = list(instances)
    if not instances:
        raise HoldRefused("There is no instance to put on hold.")
    with transaction.atomic():
        return [
            place_hold(instance, minutes=minutes, reason=reason, user=user, actor=actor, request=request)
            for instance in instances
        ]


def end_holds(instances, *, user=None, actor: str = "", request=None) -> list[Hold]:
    """End the hold of each of `instances` on hold; the holds ended."""
    with transaction.atomic():
        ended = [end_hold(instance, user=user, actor=actor, request=request) for instance in instances]
    return [hold for hold in ended if hold is not None]
