"""Restart schedules (fired by django-celery-beat) and the record of each run."""

import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from console.instances.models import Instance, slug_validator
from console.operations.models import RELOAD_WEIGHTS_HELP, SKIP_HEALTHY_HELP, Rollout
from console.schedules import cron as cronexpr

TASK = "console.schedules.tasks.run_schedule"


class RestartSchedule(models.Model):
    class BusyPolicy(models.TextChoices):
        WAIT = "wait", _("Drain and restart (wait for in-flight requests)")
        SKIP = "skip", _("Skip instances with requests in flight")

    name = models.CharField(max_length=100, unique=True)
    cron = models.CharField(
        "when", max_length=120, help_text=_('"daily at 03:00" or five cron fields, e.g. "0 3 * * 1-5".')
    )
    timezone = models.CharField(
        max_length=64, default=settings.TIME_ZONE, help_text=_("IANA name, e.g. Asia/Shanghai.")
    )
    instances = models.ManyToManyField(Instance, blank=True, related_name="schedules")
    group = models.CharField(max_length=63, blank=True, validators=[slug_validator])
    strategy = models.CharField(max_length=16, choices=Rollout.Strategy.choices, default=Rollout.Strategy.ROLLING)
    busy_policy = models.CharField(max_length=8, choices=BusyPolicy.choices, default=BusyPolicy.WAIT)
    skip_healthy = models.BooleanField("only those that need it", default=False, help_text=SKIP_HEALTHY_HELP)
    reload_weights = models.BooleanField(default=False, help_text=RELOAD_WEIGHTS_HELP)
    window_start = models.TimeField(null=True, blank=True, help_text=_("Maintenance window start (schedule's zone)."))
    window_end = models.TimeField(null=True, blank=True, help_text=_("Maintenance window end; may cross midnight."))
    grace_minutes = models.PositiveIntegerField(
        default=30, help_text=_("A run missed while beat was down still runs if it is at most this late.")
    )
    enabled = models.BooleanField(default=True)
    periodic_task = models.OneToOneField(PeriodicTask, null=True, blank=True, on_delete=models.SET_NULL, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("schedules:edit", args=[self.pk])

    @property
    def parsed(self) -> cronexpr.Cron:
        return cronexpr.parse(self.cron)

    @property
    def zone(self):
        return cronexpr.zone(self.timezone)

    def targets(self) -> list[Instance]:
        chosen = {i.pk: i for i in self.instances.filter(enabled=True)} if self.pk else {}
        if self.group:
            chosen.update({i.pk: i for i in Instance.objects.filter(group=self.group, enabled=True)})
        return sorted(chosen.values(), key=lambda i: i.name)

    def in_window(self, instant) -> bool:
        if self.window_start is None or self.window_end is None:
            return True
        local = instant.astimezone(self.zone).time()
        if self.window_start <= self.window_end:
            return self.window_start <= local < self.window_end
        return local >= self.window_start or local < self.window_end  # across midnight

    def clean(self) -> None:
        errors = {}
        try:
            self.cron = str(cronexpr.parse(self.cron))
        except cronexpr.CronError as exc:
            errors["cron"] = str(exc)
        try:
            cronexpr.zone(self.timezone)
        except cronexpr.CronError as exc:
            errors["timezone"] = str(exc)
        if (self.window_start is None) != (self.window_end is None):
            errors["window_end"] = gettext("Give both ends of the maintenance window, or neither.")
        elif self.window_start is not None and self.window_start == self.window_end:
            errors["window_end"] = gettext("The maintenance window is empty.")
        if errors:
            raise ValidationError(errors)

    def save(self, *args, **kwargs) -> None:
        super().save(*args, **kwargs)
        self.sync_beat()

    def sync_beat(self) -> None:
        """Keep the django-celery-beat entry in step with this schedule (one beat process reads it).
        Called by save(); a deleted schedule takes its entry with it (signals.py)."""
        parsed = self.parsed
        crontab, _created = CrontabSchedule.objects.get_or_create(
            minute=parsed.minute,
            hour=parsed.hour,
            day_of_month=parsed.day_of_month,
            month_of_year=parsed.month_of_year,
            day_of_week=parsed.day_of_week,
            timezone=self.timezone,
        )
        task = self.periodic_task or PeriodicTask(name=f"restart-schedule-{self.pk}", task=TASK)
        task.crontab = crontab
        task.args = json.dumps([self.pk])
        task.enabled = self.enabled
        task.description = f"Restart schedule {self.name!r}"
        task.save()
        if self.periodic_task_id != task.pk:
            self.periodic_task = task
            RestartSchedule.objects.filter(pk=self.pk).update(periodic_task=task)


class ScheduleRun(models.Model):
    class State(models.TextChoices):
        STARTED = "started", "Started"
        SKIPPED = "skipped", "Skipped"

    schedule = models.ForeignKey(RestartSchedule, on_delete=models.CASCADE, related_name="runs")
    planned_for = models.DateTimeField()
    fired_at = models.DateTimeField()
    state = models.CharField(max_length=16, choices=State.choices)
    reason = models.CharField(max_length=300, blank=True)
    rollout = models.ForeignKey(Rollout, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-planned_for"]
        # However often beat fires for one planned time, it runs at most once.
        constraints = [models.UniqueConstraint(fields=["schedule", "planned_for"], name="one_run_per_planned_time")]

    def __str__(self) -> str:
        return f"{self.schedule} at {self.planned_for:%Y-%m-%d %H:%M} UTC: {self.state}"
