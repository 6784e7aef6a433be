"""`in` over an integer column without the values no row of it can hold.

Django already answers `pk=10**20` with no rows (IntegerFieldOverflow) but binds every value of
`pk__in=[...]`, and SQLite, the embedded default, cannot bind an integer beyond 64 bits: a forged
choice in any form that picks rows by key (a schedule's instances, the admin's) was an
OverflowError, a 500, where it should be "not a valid choice"."""

from django.db.models import IntegerField
from django.db.models.lookups import In


@IntegerField.register_lookup
class IntegerFieldIn(In):
    def process_rhs(self, compiler, connection):
        if self.rhs_is_direct_value():
            low, high = connection.ops.integer_field_range(self.lhs.output_field.get_internal_type())
            self.rhs = [value for value in self.rhs if _within(value, low, high)]
        return super().process_rhs(compiler, connection)


def _within(value, low: int | None, high: int | None) -> bool:
    if not isinstance(value, int):
        return True  # None and expressions: as Django treats them
    return (low is None or value >= low) and (high is None or value <= high)
