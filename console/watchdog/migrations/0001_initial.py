# The Watchdog model moved here from the schedules app. Its table is the one schedules created
# (renamed by schedules 0002), so this only records the model in this app's state: no row moves.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('instances', '0002_restart_in_place'),
        ('schedules', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Watchdog',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('enabled', models.BooleanField(default=True)),
                        ('liveness_failures', models.PositiveSmallIntegerField(default=3, help_text='Restart after this many failed probes in a row (0: off).')),
                        ('startup_grace_seconds', models.PositiveIntegerField(default=180, help_text='No rule fires this soon after a start (a loading model is not killed).')),
                        ('p95_limit_ms', models.FloatField(blank=True, help_text='p95 latency above this many ms ...', null=True)),
                        ('p95_factor', models.FloatField(blank=True, help_text='... or above this many times its own baseline since the last start.', null=True)),
                        ('fragmentation_limit', models.FloatField(blank=True, help_text='Allocator fragmentation (reserved but unused share, 0-1) above this.', null=True)),
                        ('close_wait_limit', models.PositiveIntegerField(blank=True, help_text='CLOSE_WAIT connections above this.', null=True)),
                        ('gpu_memory_percent', models.FloatField(blank=True, help_text='GPU memory use above this percentage.', null=True)),
                        ('sustain_seconds', models.PositiveIntegerField(default=300, help_text='A decay rule fires only after holding this long (M minutes).')),
                        ('error_burst', models.PositiveIntegerField(blank=True, help_text='OOM/CUDA error/timeout lines in one sampling interval at or above this.', null=True)),
                        ('decay_action', models.CharField(choices=[('alert', 'Alert only'), ('soft_reset', 'Soft reset'), ('restart', 'Restart')], default='restart', max_length=16)),
                        ('backoff_seconds', models.PositiveIntegerField(default=300, help_text='Wait between automatic actions; doubles with each action in the last hour.')),
                        ('max_actions_per_hour', models.PositiveSmallIntegerField(default=3, help_text='After this many automatic actions in an hour the instance needs attention: alerts only.')),
                        ('needs_attention_since', models.DateTimeField(blank=True, null=True)),
                        ('attention_reason', models.CharField(blank=True, max_length=300)),
                        ('instance', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='watchdog', to='instances.instance')),
                    ],
                ),
            ],
            database_operations=[],
        ),
    ]
