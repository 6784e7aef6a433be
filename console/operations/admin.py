from django.contrib import admin

from console.admin_readonly import ReadOnlyAdmin
from console.operations.models import Operation


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Operations are history: listed and read here, requested from the console, never edited."""

    list_display = ["id", "instance", "kind", "trigger", "state", "requested_by", "created", "duration_s"]
    list_filter = ["state", "kind", "trigger", "p95_change", "instance__host", "created"]
    search_fields = ["instance__name", "reason", "error", "requested_by__username"]
    list_select_related = ["instance", "requested_by"]
    date_hierarchy = "created"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Operation._meta.fields]

    @admin.display(description="seconds")
    def duration_s(self, operation: Operation) -> str:
        return f"{operation.duration:.1f}" if operation.duration is not None else "-"
