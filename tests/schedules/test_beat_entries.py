"""Every schedule has its beat entry in step, however it is saved or deleted."""

import json

import pytest
from django_celery_beat.models import PeriodicTask

from console.schedules.models import RestartSchedule


@pytest.mark.django_db
def test_saving_creates_and_updates_the_entry_with_json_args():
    schedule = RestartSchedule.objects.create(name="nightly", cron="3 4 * * *", timezone="Asia/Shanghai")
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert json.loads(task.args) == [schedule.pk] and task.enabled
    assert (task.crontab.minute, task.crontab.hour, str(task.crontab.timezone)) == ("3", "4", "Asia/Shanghai")
    schedule.enabled, schedule.cron = False, "0 5 * * *"
    schedule.save()
    task.refresh_from_db()
    assert not task.enabled and task.crontab.hour == "5"
    assert PeriodicTask.objects.filter(name__startswith="restart-schedule-").count() == 1


@pytest.mark.django_db
def test_deleting_one_or_many_schedules_takes_their_entries_along():
    one = RestartSchedule.objects.create(name="one", cron="0 3 * * *", timezone="UTC")
    RestartSchedule.objects.create(name="two", cron="0 4 * * *", timezone="UTC")
    RestartSchedule.objects.create(name="three", cron="0 5 * * *", timezone="UTC")
    one.delete()
    assert PeriodicTask.objects.filter(name__startswith="restart-schedule-").count() == 2
    RestartSchedule.objects.all().delete()  # the admin's "delete selected"
    assert not PeriodicTask.objects.filter(name__startswith="restart-schedule-").exists()
