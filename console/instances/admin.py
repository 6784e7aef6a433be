from django.contrib import admin, messages

from console.instances.engines import launch_warnings
from console.instances.models import Host, Instance


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "queue", "docker_url", "instance_count", "seen_at", "created"]
    search_fields = ["name", "notes"]
    readonly_fields = ["seen_at", "nvml"]

    @admin.display(description="instances")
    def instance_count(self, host: Host) -> int:
        return host.instances.count()


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "host", "runtime", "engine", "group", "base_url", "enabled"]
    list_filter = ["host", "runtime", "engine", "group", "enabled"]
    search_fields = ["name", "display_name", "container_name", "image", "group"]
    list_select_related = ["host"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name",
                    "display_name",
                    "host",
                    "runtime",
                    "engine",
                    "group",
                    "enabled",
                    "base_url",
                    "admin_token",
                    "gpu_indices",
                ]
            },
        ),
        ("Docker", {"fields": ["container_name", "image", "run_spec"]}),
        ("Process", {"fields": ["command", "working_dir", "env"]}),
        (
            "Restarts (timeouts in seconds)",
            {"fields": ["handover", "restart_in_place", "drain_timeout", "stop_timeout", "ready_timeout"]},
        ),
    ]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        for warning in launch_warnings(obj):
            messages.warning(request, f"{obj.name}: {warning}")
