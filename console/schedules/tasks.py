from celery import shared_task

from console.schedules.runs import fire


@shared_task(acks_late=True)
def run_schedule(schedule_id: int) -> str | None:
    """Fired by beat at the schedule's times; the restarts themselves run as a rollout."""
    run = fire(schedule_id)
    return run.state if run else None
