from django.contrib import admin
from django.utils import timezone

from console.watchdog.models import Watchdog


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

    def save_model(self, request, obj, form, change):
        if change and "needs_attention_since" in form.changed_data and obj.needs_attention_since is None:
            obj.cleared_at = timezone.now()  # cleared here as on the instance's page
        super().save_model(request, obj, form, change)
