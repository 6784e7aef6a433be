from django.contrib import admin

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
