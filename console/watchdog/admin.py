from django.contrib import admin

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
