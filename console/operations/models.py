"""Operations: the audit record and live progress of every start, stop, restart and soft reset."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class FinishedOperationError(Exception):
    """A finished operation is history: it is never edited."""


class Operation(models.Model):
    class Kind(models.TextChoices):
        RESTART = "restart", _("Restart")
        START = "start", _("Start")
        STOP = "stop", _("Stop")
        SOFT_RESET = "soft_reset", _("Soft reset")

    class Trigger(models.TextChoices):
        MANUAL = "manual", _("Manual")
        SCHEDULE = "schedule", _("Schedule")
        WATCHDOG = "watchdog", _("Watchdog")
        API = "api", _("API")

    class State(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    ACTIVE_STATES = (State.QUEUED, State.RUNNING)

    instance = models.ForeignKey("instances.Instance", on_delete=models.PROTECT, related_name="operations")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.MANUAL)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=500, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text='e.g. {"recreate": true}')
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    # Ordered list of {"name", "state", "started", "finished", "detail"}.
    steps = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    # The error as message ids and parameters (console.sentences), for pages in other languages.
    error_said = models.JSONField(null=True, blank=True)
    log_tail = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times a worker picked it up.")
    heartbeat = models.DateTimeField(null=True, blank=True, help_text="Last sign of life of the worker running it.")
    worker = models.CharField(
        max_length=200, blank=True, help_text="The worker of the last attempt: its host name, machine and pid."
    )
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    rollout = models.ForeignKey(
        "operations.Rollout", null=True, blank=True, on_delete=models.SET_NULL, related_name="operations"
    )
    # Its effect on p95 latency, kept once the window after it has passed (console.operations.effect):
    # lists and Prometheus read these, and they outlive the samples they were read from.
    p95_before_ms = models.FloatField(null=True, blank=True, editable=False)
    p95_after_ms = models.FloatField(null=True, blank=True, editable=False)
    p95_change = models.CharField(max_length=8, blank=True, editable=False, help_text="lower, same or higher")
    effect_settled = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created"]
        indexes = [
            models.Index(fields=["instance", "-created"]),
            # Each instance's last restart, and its last measured one (/metrics, at every scrape).
            models.Index(fields=["instance", "-finished"], name="operation_instance_finished"),
            # Only the operations whose effect is still to be kept: a few, however long the history.
            models.Index(
                fields=["finished"],
                condition=Q(effect_settled=None, state="succeeded", kind__in=["restart", "soft_reset"]),
                name="effect_unsettled",
            ),
        ]
        constraints = [
            # The per-instance lock, kept by the database itself: at most one
            # queued or running operation per instance, however many clicks.
            models.UniqueConstraint(
                fields=["instance"],
                condition=Q(state__in=["queued", "running"]),
                name="one_active_operation_per_instance",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.instance.name} (#{self.pk})"

    @property
    def is_finished(self) -> bool:
        return self.state not in self.ACTIVE_STATES

    @property
    def duration(self) -> float | None:
        if self.started and self.finished:
            return (self.finished - self.started).total_seconds()
        return None

    def save(self, *args, **kwargs) -> None:
        if self.pk and not kwargs.pop("force_history", False):
            stored = Operation.objects.filter(pk=self.pk).values_list("state", flat=True).first()
            if stored is not None and stored not in self.ACTIVE_STATES:
                raise FinishedOperationError(f"Operation #{self.pk} is {stored}; finished operations are not edited.")
        super().save(*args, **kwargs)


RELOAD_WEIGHTS_HELP = (
    "Read the weights again from the checkpoint at each restart, even on a server whose weight holder keeps "
    "them across restarts (a new fine-tune copied over the old files, a copy that is suspect); a restart in "
    "place is then a whole restart."
)
SKIP_HEALTHY_HELP = (
    "Leave running an instance whose checklist (Diagnose) finds nothing a restart would cure when its turn "
    "comes: latency at its baseline, GPU memory with room, no leaked connections, a clean log. One without "
    "recent figures is restarted."
)


class Rollout(models.Model):
    """A restart of several instances: rolling (one at a time, each ready before the next) or all at once."""

    class Strategy(models.TextChoices):
        ROLLING = "rolling", _("Rolling (one at a time)")
        ALL = "all", _("All at once")

    class State(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")

    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.ROLLING)
    instance_names = models.JSONField(default=list, help_text="The instances, in the order they are restarted.")
    skip_busy = models.BooleanField(
        default=False, help_text="Skip an instance that has requests in flight instead of draining it."
    )
    reload_weights = models.BooleanField(default=False, help_text=RELOAD_WEIGHTS_HELP)
    skip_healthy = models.BooleanField(default=False, help_text=SKIP_HEALTHY_HELP)
    trigger = models.CharField(max_length=16, choices=Operation.Trigger.choices, default=Operation.Trigger.MANUAL)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=500, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    # One entry per instance: {"instance", "operation", "state", "detail"}.
    results = models.JSONField(default=list, blank=True)
    not_after = models.DateTimeField(
        null=True, blank=True, help_text="No instance is started after this (the end of a maintenance window)."
    )
    error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    # When its report went to the alert channels that want one (a schedule's run, once measured).
    reported = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.get_strategy_display()} restart of {', '.join(self.instance_names)} (#{self.pk})"

    @property
    def is_finished(self) -> bool:
        return self.state in (self.State.SUCCEEDED, self.State.FAILED)

    @property
    def operation_ids(self) -> list[int]:
        """The operations its results name (a skipped instance has none)."""
        return [r["operation"] for r in self.results if isinstance(r.get("operation"), int)]
