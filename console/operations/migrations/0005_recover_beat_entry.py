# Beat's minute task was renamed (fail_stale_operations -> recover): its old database entry would
# send a task no worker knows.

from django.db import migrations


def drop_old_entry(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name="fail-stale-operations").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("operations", "0004_rollout_not_after"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(drop_old_entry, migrations.RunPython.noop)]
