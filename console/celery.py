"""The Celery app. Operation and sampling tasks go to their instance's host queue."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("console")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def host_queue(host_name: str) -> str:
    """The queue a host's worker listens on."""
    return f"host.{host_name}"
