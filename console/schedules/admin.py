from django.contrib import admin

from console.schedules.models import RestartSchedule, ScheduleRun, Watchdog


@admin.register(RestartSchedule)
class RestartScheduleAdmin(admin.ModelAdmin):
    list_display = ["name", "cron", "timezone", "group", "strategy", "enabled"]
    list_filter = ["enabled", "strategy", "timezone"]
    filter_horizontal = ["instances"]

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        form.instance.sync_beat()  # beat's entry follows every edit made here too


@admin.register(ScheduleRun)
class ScheduleRunAdmin(admin.ModelAdmin):
    list_display = ["planned_for", "schedule", "state", "reason", "rollout"]
    list_filter = ["state", "schedule"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in ScheduleRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Watchdog)
class WatchdogAdmin(admin.ModelAdmin):
    list_display = ["instance", "enabled", "decay_action", "liveness_failures", "needs_attention_since"]
    list_filter = ["enabled", "decay_action"]
    fieldsets = [
        (None, {"fields": ["instance", "enabled"]}),
        ("Liveness", {"fields": ["liveness_failures", "startup_grace_seconds"]}),
        (
            "Soft decay",
            {
                "fields": [
                    "p95_limit_ms",
                    "p95_factor",
                    "fragmentation_limit",
                    "close_wait_limit",
                    "gpu_memory_percent",
                    "error_burst",
                    "sustain_seconds",
                    "decay_action",
                ]
            },
        ),
        (
            "Storm protection",
            {"fields": ["backoff_seconds", "max_actions_per_hour", "needs_attention_since", "attention_reason"]},
        ),
    ]
