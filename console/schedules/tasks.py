from celery import shared_task

from console.schedules import report
from console.schedules.runs import fire


@shared_task(acks_late=True)
def run_schedule(schedule_id: int) -> str | None:
    """Fired by beat at the schedule's times; the restarts themselves run as a rollout."""
    run = fire(schedule_id)
    return run.state if run else None


@shared_task(ignore_result=True)
def send_reports() -> int:
    """Beat's minute round: each scheduled run, once ended and measured, reported to the channels."""
    return report.send_reports()
