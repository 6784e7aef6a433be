"""Admin pages for records that are seen there and written only by the console: no add, change or
delete for anyone (the change page still shows a record, read-only)."""


class ReadOnlyAdmin:
    """A ModelAdmin mixin, first among its bases."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
