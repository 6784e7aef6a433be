"""The Watchdog model moved from the schedules app to its own: rows and permissions stay."""

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from console.watchdog.models import Watchdog
from tests.factories import process_instance

BEFORE = [("schedules", "0001_initial"), ("watchdog", None)]


@pytest.mark.django_db(transaction=True)
def test_rows_and_permissions_survive_the_move():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    ContentType.objects.clear_cache()
    instance = process_instance("old-a", command=["true"])
    old_watchdog = executor.loader.project_state(BEFORE[:1]).apps.get_model("schedules", "Watchdog")
    old_watchdog.objects.create(instance_id=instance.pk, p95_limit_ms=321, liveness_failures=7)
    content_type, _ = ContentType.objects.get_or_create(app_label="schedules", model="watchdog")
    permission = Permission.objects.create(content_type=content_type, codename="watch_test", name="test permission")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    ContentType.objects.clear_cache()

    dog = Watchdog.objects.get(instance__name="old-a")
    assert (dog.p95_limit_ms, dog.liveness_failures) == (321, 7)
    moved = Permission.objects.get(pk=permission.pk)
    assert (moved.content_type.app_label, moved.content_type.model) == ("watchdog", "watchdog")
