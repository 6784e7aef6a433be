from django.contrib import admin
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule

from console.admin_readonly import ReadOnlyAdmin
from console.schedules.models import RestartSchedule, ScheduleRun


@admin.register(RestartSchedule)
class RestartScheduleAdmin(admin.ModelAdmin):
    list_display = ["name", "cron", "timezone", "group", "strategy", "enabled"]
    list_filter = ["enabled", "strategy", "timezone"]
    filter_horizontal = ["instances"]


@admin.register(ScheduleRun)
class ScheduleRunAdmin(admin.ModelAdmin):
    list_display = ["planned_for", "schedule", "state", "reason", "rollout"]
    list_filter = ["state", "schedule"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in ScheduleRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


class SeenOnly(ReadOnlyAdmin):
    """Beat's entries as the console writes them, to be seen and never edited here, by anyone: a
    restart schedule's entry follows its page (/schedules/) and the upkeep's follow the settings, so an
    entry edited here would part from what its page shows (the page at 03:00, beat at 04:00, or
    disabled); and an entry's task, arguments and queue are whatever its editor types, so an entry
    written here could run any of the console's tasks on any host's queue, outside its permissions and
    its audit. Beat's own actions (run, enable, disable) go too, for the same reasons."""

    actions = None


for model, model_admin in [
    (PeriodicTask, beat_admin.PeriodicTaskAdmin),
    (CrontabSchedule, beat_admin.CrontabScheduleAdmin),
    (IntervalSchedule, beat_admin.IntervalScheduleAdmin),
    (SolarSchedule, beat_admin.SolarScheduleAdmin),
    (ClockedSchedule, beat_admin.ClockedScheduleAdmin),
]:
    admin.site.unregister(model)
    admin.site.register(model, type(model_admin.__name__, (SeenOnly, model_admin), {}))
