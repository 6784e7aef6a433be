from django.contrib import admin

from console.admin_readonly import ReadOnlyAdmin
from console.audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = ["at", "actor", "address", "action", "target", "outcome"]
    list_filter = ["action", "actor"]
    search_fields = ["actor", "target", "reason", "outcome"]
    date_hierarchy = "at"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in AuditEntry._meta.fields]
