"""Beat's entry goes with its schedule, however the schedule is deleted (one, or many from the admin)."""

from django.db.models.signals import post_delete
from django.dispatch import receiver

from console.schedules.models import RestartSchedule


@receiver(post_delete, sender=RestartSchedule)
def delete_beat_entry(sender, instance: RestartSchedule, **kwargs) -> None:
    if instance.periodic_task_id is not None:
        instance.periodic_task.delete()
