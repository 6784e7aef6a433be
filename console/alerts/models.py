"""Where notifications go, and every attempt to deliver one."""

from django.db import models

from console.instances.models import Instance


class AlertChannel(models.Model):
    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook (JSON POST)"
        EMAIL = "email", "Email"

    class Format(models.TextChoices):
        GENERIC = "generic", "Generic JSON (also read by Slack)"
        FEISHU = "feishu", "Feishu / Lark bot"
        DINGTALK = "dingtalk", "DingTalk bot"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.WEBHOOK)
    url = models.URLField(blank=True, help_text="Webhook URL.")
    format = models.CharField(max_length=16, choices=Format.choices, default=Format.GENERIC)
    emails = models.CharField(max_length=500, blank=True, help_text="Addresses separated by commas.")
    instances = models.ManyToManyField(Instance, blank=True, help_text="None selected: every instance.")
    on_failed_operation = models.BooleanField(default=True)
    on_watchdog = models.BooleanField(default=True)
    on_needs_attention = models.BooleanField(default=True)
    on_schedule_report = models.BooleanField(
        default=False,
        help_text="After each scheduled restart, once its effect is measured: restarted, skipped and failed "
        "instances, and on how many the restart lowered p95 latency.",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError
        from django.core.validators import validate_email

        if self.kind == self.Kind.WEBHOOK and not self.url:
            raise ValidationError({"url": "A webhook channel needs its URL."})
        if self.kind == self.Kind.EMAIL:
            addresses = [a.strip() for a in self.emails.split(",") if a.strip()]
            if not addresses:
                raise ValidationError({"emails": "An email channel needs at least one address."})
            for address in addresses:
                try:
                    validate_email(address)
                except ValidationError:
                    raise ValidationError({"emails": f"{address!r} is not an email address."}) from None


class AlertDelivery(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SILENCED = "silenced", "Silenced (the instance was on hold)"

    channel = models.ForeignKey(AlertChannel, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=32)
    instance_name = models.CharField(max_length=63)
    title = models.CharField(max_length=200)
    text = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    sent = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"{self.event} for {self.instance_name} via {self.channel}: {self.state}"
