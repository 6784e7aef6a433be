"""The beat scheduler: django-celery-beat's, closing its database connection when beat stops
(an embedded beat thread otherwise leaves it open behind it)."""

from django.db import connection
from django_celery_beat.schedulers import DatabaseScheduler


class Scheduler(DatabaseScheduler):
    def close(self) -> None:
        try:
            super().close()
        finally:
            connection.close()
