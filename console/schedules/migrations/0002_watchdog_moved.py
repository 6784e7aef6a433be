# The Watchdog model moved to the watchdog app: its table is renamed, its rows and permissions stay.

from django.db import migrations


def move_content_type(apps, schema_editor):
    """Permissions point at the model's content type: relabel it rather than make a new one."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="watchdog", model="watchdog").exists():
        ContentType.objects.filter(app_label="schedules", model="watchdog").update(app_label="watchdog")


def move_content_type_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="schedules", model="watchdog").exists():
        ContentType.objects.filter(app_label="watchdog", model="watchdog").update(app_label="schedules")


class Migration(migrations.Migration):

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('schedules', '0001_initial'),
        ('watchdog', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='Watchdog')],
            database_operations=[migrations.AlterModelTable(name='Watchdog', table='watchdog_watchdog')],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
