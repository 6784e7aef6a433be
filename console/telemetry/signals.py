"""What telemetry tells the layers above it, without knowing them (the watchdog listens)."""

from django.dispatch import Signal

# Sent once a sampling round is stored: host_name, instance_ids (those sampled).
samples_recorded = Signal()
