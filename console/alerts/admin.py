from django.contrib import admin, messages

from console.alerts.models import AlertChannel, AlertDelivery
from console.alerts.notify import _enqueue


@admin.register(AlertChannel)
class AlertChannelAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "kind",
        "format",
        "enabled",
        "on_failed_operation",
        "on_watchdog",
        "on_needs_attention",
        "on_schedule_report",
    ]
    list_filter = ["kind", "enabled"]
    filter_horizontal = ["instances"]


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(admin.ModelAdmin):
    """Every notification and its delivery attempts; failed ones can be sent again."""

    list_display = ["created", "event", "instance_name", "channel", "state", "attempts", "last_error"]
    list_filter = ["state", "event", "channel"]
    search_fields = ["instance_name", "title", "text"]
    actions = ["retry"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in AlertDelivery._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Send again")
    def retry(self, request, queryset):
        count = 0
        for delivery in queryset.exclude(state=AlertDelivery.State.SENT):
            delivery.state, delivery.attempts = AlertDelivery.State.PENDING, 0
            delivery.save(update_fields=["state", "attempts"])
            _enqueue(delivery.pk)
            count += 1
        messages.info(request, f"{count} delivery(ies) queued again.")
