"""The word in the morning on the night's restarts: once a schedule's run has ended and its restarts'
effect is measured, a report to the alert channels that want one (`on_schedule_report`): which
instances restarted, were skipped and why, or failed, and on how many the restart lowered p95 latency.
A cron job restarts and says nothing; an operator should not have to open the console to learn that
the nightly restart did nothing, or that half of it was skipped.
"""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from console.alerts.notify import SCHEDULE_REPORT, notify
from console.instances.models import Instance
from console.operations.effect import KINDS, rollout_effects
from console.operations.models import Operation, Rollout
from console.schedules.models import ScheduleRun

# A run that ended longer ago is never reported: not on a console's first minute after an upgrade, and
# not a day late after beat was down.
WITHIN = timedelta(days=1)


def _ms(value) -> str:
    return "?" if value is None else f"{value:.0f} ms"


def _line(result: dict) -> str:
    line = f"- {result.get('instance')}: {result.get('state')}"
    if result.get("detail"):
        line += f" ({result['detail']})"
    effect = result.get("latency_effect")
    if effect:
        line += f"; p95 {_ms(effect['before'])} → {_ms(effect['after'])}"
        if effect["change"]:
            line += f" ({effect['change']})"
    return line


def compose(rollout: Rollout) -> tuple[str, str, dict]:
    """The report's title, text and details: counts, then a line per instance."""
    run = ScheduleRun.objects.filter(rollout=rollout).select_related("schedule").first()
    name = f"schedule {run.schedule.name!r}" if run else f"rollout #{rollout.pk}"
    effects = rollout_effects(rollout)  # an ended run's: its results, each with its p95 before and after
    results = effects["results"]
    counts = {state: sum(1 for r in results if r.get("state") == state) for state in ("succeeded", "skipped", "failed")}
    title = (
        f"{name}: {counts['succeeded']} restarted, {counts['skipped']} skipped, {counts['failed']} failed; "
        f"p95 lower on {effects['lowered']} of {effects['judged']}"
    )
    text = "\n".join(
        [f"Run of {rollout.created:%Y-%m-%d %H:%M} UTC, ended {rollout.finished:%H:%M} UTC ({rollout.state}).", ""]
        + [_line(result) for result in results]
    )
    details = {
        "rollout": rollout.pk,
        "schedule": run.schedule.name if run else None,
        **counts,
        "p95_lowered": effects["lowered"],
        "p95_judged": effects["judged"],
    }
    return title, text, details


def _measured(rollout: Rollout) -> bool:
    """Every restart of the run that has an effect has it kept (console.operations.effect.settle)."""
    unsettled = Operation.objects.filter(
        pk__in=rollout.operation_ids, effect_settled=None, state=Operation.State.SUCCEEDED, kind__in=KINDS
    )
    return not unsettled.exists()


def send_reports(now=None) -> int:
    """Report each scheduled run that ended within a day, once its restarts are measured; how many."""
    now = now or timezone.now()
    ended = Rollout.objects.filter(
        trigger=Operation.Trigger.SCHEDULE,
        state__in=[Rollout.State.SUCCEEDED, Rollout.State.FAILED],
        reported=None,
        finished__gte=now - WITHIN,
    ).order_by("finished")
    sent = 0
    for rollout in ended:
        if not _measured(rollout):
            continue
        with transaction.atomic():
            if not Rollout.objects.filter(pk=rollout.pk, reported=None).update(reported=now):
                continue  # another round reported it
            title, text, details = compose(rollout)
            among = Instance.objects.filter(name__in=rollout.instance_names)
            notify(SCHEDULE_REPORT, None, title, text, details, among=among)
        sent += 1
    return sent
