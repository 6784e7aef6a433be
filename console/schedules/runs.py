"""What happens when beat fires a schedule: one run per planned time, late runs within grace only."""

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from console.audit.record import record as audit
from console.operations.models import Operation
from console.operations.rollout import request_rollout
from console.schedules import cron
from console.schedules.models import RestartSchedule, ScheduleRun

# beat fires a little after the minute; anything later than this counts as a missed run.
ON_TIME = timedelta(minutes=2)


def fire(schedule_id: int, now=None) -> ScheduleRun | None:
    """Run the schedule for its latest planned time, or record why not. None: nothing to do."""
    now = now or timezone.now()
    schedule = RestartSchedule.objects.filter(pk=schedule_id).first()
    if schedule is None or not schedule.enabled:
        return None
    planned = cron.previous_run(schedule.parsed, schedule.zone, now)
    if planned is None or ScheduleRun.objects.filter(schedule=schedule, planned_for=planned).exists():
        return None  # a second firing for the same time (DST fall back, redelivery): already handled
    late = now - planned
    grace = max(ON_TIME, timedelta(minutes=schedule.grace_minutes))
    if late > grace:
        return _record(
            schedule, planned, now, "skipped", f"missed by {_minutes(late)} (grace {schedule.grace_minutes} min)"
        )
    if not schedule.in_window(planned):
        return _record(schedule, planned, now, "skipped", "outside the maintenance window")
    targets = schedule.targets()
    if not targets:
        return _record(schedule, planned, now, "skipped", "no enabled instance to restart")
    with transaction.atomic():
        run = _record(schedule, planned, now, "started", f"{len(targets)} instance(s), {schedule.strategy}")
        if run is None or run.state != "started":
            return run
        rollout = request_rollout(
            targets,
            strategy=schedule.strategy,
            reason=f"schedule {schedule.name!r} ({planned.astimezone(schedule.zone):%Y-%m-%d %H:%M %Z})",
            trigger=Operation.Trigger.SCHEDULE,
            skip_busy=schedule.busy_policy == RestartSchedule.BusyPolicy.SKIP,
            reload_weights=schedule.reload_weights,
            skip_healthy=schedule.skip_healthy,
        )
        if schedule.window_end is not None:
            rollout.not_after = _window_close(schedule, planned)
            rollout.save(update_fields=["not_after"])
        run.rollout = rollout
        run.save(update_fields=["rollout"])
    return run


def _window_close(schedule: RestartSchedule, planned):
    local = planned.astimezone(schedule.zone)
    end = local.replace(hour=schedule.window_end.hour, minute=schedule.window_end.minute, second=0, microsecond=0)
    if end <= local:
        end += timedelta(days=1)
    return end


def _record(schedule, planned, now, state: str, reason: str) -> ScheduleRun | None:
    try:
        with transaction.atomic():
            run = ScheduleRun.objects.create(
                schedule=schedule, planned_for=planned, fired_at=now, state=state, reason=reason[:300]
            )
    except IntegrityError:
        return None  # a concurrent firing recorded it first
    audit("schedule.fired", actor="schedule", target=f"schedule {schedule.name}", outcome=f"{state}: {reason}")
    return run


def _minutes(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60} min"
