"""Count every ended operation's durations into the kept tally that /metrics reads on from."""

import time

from django.core.management.base import BaseCommand

from console.api.durations import DURATIONS


class Command(BaseCommand):
    help = (
        "Count the ended operations' durations into the tally /metrics keeps in the database, so that the "
        "first scrape after an upgrade does not read the whole history near Prometheus's timeout. Run at "
        "each start, after migrate: once the tally is kept it reads only what ended since."
    )

    def handle(self, *args, **options):
        began = time.monotonic()
        operations, _steps = DURATIONS.read()
        counted = sum(row[-2] for row in operations.rows.values())
        self.stdout.write(
            f"operation durations kept up to #{DURATIONS.upto}: {counted} operation(s) counted in "
            f"{time.monotonic() - began:.1f} s"
        )
