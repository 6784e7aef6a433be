from django.contrib import admin

from console.api.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created", "last_used", "expires"]
    list_filter = ["user", ("expires", admin.EmptyFieldListFilter)]
    search_fields = ["name", "user__username", "prefix"]
    readonly_fields = ["prefix", "created", "last_used"]

    def has_add_permission(self, request) -> bool:
        return False  # tokens are issued on the Tokens page, which shows the key once
