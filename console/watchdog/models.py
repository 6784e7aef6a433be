"""Per-instance watchdog rules: liveness and the runbook's soft-decay signs, with storm protection."""

from django.db import models
from django.utils import timezone

from console.instances.models import Instance


class Watchdog(models.Model):
    """Per-instance rules that heal soft decay before users notice, with storm protection."""

    class Action(models.TextChoices):
        ALERT = "alert", "Alert only"
        SOFT_RESET = "soft_reset", "Soft reset"
        RESTART = "restart", "Restart"

    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, related_name="watchdog")
    enabled = models.BooleanField(default=True)
    liveness_failures = models.PositiveSmallIntegerField(
        default=3, help_text="Restart after this many failed probes in a row (0: off)."
    )
    startup_grace_seconds = models.PositiveIntegerField(
        default=180, help_text="No rule fires this soon after a start (a loading model is not killed)."
    )
    p95_limit_ms = models.FloatField(null=True, blank=True, help_text="p95 latency above this many ms ...")
    p95_factor = models.FloatField(
        null=True, blank=True, help_text="... or above this many times its own baseline since the last start."
    )
    fragmentation_limit = models.FloatField(
        null=True, blank=True, help_text="Allocator fragmentation (reserved but unused share, 0-1) above this."
    )
    close_wait_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="CLOSE_WAIT connections above this."
    )
    gpu_memory_percent = models.FloatField(null=True, blank=True, help_text="GPU memory use above this percentage.")
    sustain_seconds = models.PositiveIntegerField(
        default=300, help_text="A decay rule fires only after holding this long (M minutes)."
    )
    error_burst = models.PositiveIntegerField(
        null=True, blank=True, help_text="OOM/CUDA error/timeout lines in one sampling interval at or above this."
    )
    decay_action = models.CharField(max_length=16, choices=Action.choices, default=Action.RESTART)
    backoff_seconds = models.PositiveIntegerField(
        default=300, help_text="Wait between automatic actions; doubles with each action in the last hour."
    )
    max_actions_per_hour = models.PositiveSmallIntegerField(
        default=3, help_text="After this many automatic actions in an hour the instance needs attention: alerts only."
    )
    needs_attention_since = models.DateTimeField(null=True, blank=True)
    attention_reason = models.CharField(max_length=300, blank=True)
    cleared_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When 'needs attention' was last cleared: what the watchdog did before is not held against it.",
    )

    def __str__(self) -> str:
        return f"watchdog of {self.instance.name}"

    def clear(self) -> None:
        """An operator has looked at the instance: the watchdog may act on it again."""
        self.needs_attention_since, self.attention_reason, self.cleared_at = None, "", timezone.now()
        self.save(update_fields=["needs_attention_since", "attention_reason", "cleared_at"])
