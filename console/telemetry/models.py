"""Telemetry samples: one row per instance per sampling round, and per-minute rollups."""

from django.db import models

from console.instances.models import Instance

# The figures a chart or a rule reads; everything else a sample knows goes in `data`.
FIGURES = (
    "probe_ms",
    "in_flight",
    "rps",
    "p50_ms",
    "p95_ms",
    "ttft_ms",
    "gpu_used",
    "gpu_total",
    "allocated",
    "reserved",
    "fragmentation",
    "rss",
    "fds",
    "established",
    "close_wait",
    "time_wait",
    "log_errors",
)


class Sample(models.Model):
    RAW = 0
    MINUTE = 60

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="samples")
    at = models.DateTimeField()
    # Seconds one row stands for: 0 for a raw sample, 60 for a per-minute rollup.
    resolution = models.PositiveSmallIntegerField(default=RAW)
    status = models.CharField(max_length=16)
    probe_ok = models.BooleanField(default=False)
    probe_ms = models.FloatField(null=True)
    in_flight = models.IntegerField(null=True)
    rps = models.FloatField(null=True)
    p50_ms = models.FloatField(null=True)
    p95_ms = models.FloatField(null=True)
    ttft_ms = models.FloatField(null=True)
    gpu_used = models.BigIntegerField(null=True, help_text="Bytes of GPU memory held by the instance's processes.")
    gpu_total = models.BigIntegerField(null=True, help_text="Total bytes of the instance's GPUs.")
    allocated = models.BigIntegerField(null=True, help_text="Torch allocator: bytes in live tensors.")
    reserved = models.BigIntegerField(null=True, help_text="Torch allocator: bytes held from the driver.")
    fragmentation = models.FloatField(null=True)
    rss = models.BigIntegerField(null=True)
    fds = models.IntegerField(null=True)
    established = models.IntegerField(null=True)
    close_wait = models.IntegerField(null=True)
    time_wait = models.IntegerField(null=True)
    log_errors = models.IntegerField(null=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["instance", "resolution", "at"])]

    def __str__(self) -> str:
        return f"{self.instance_id} {self.at:%Y-%m-%d %H:%M:%S} {self.status}"

    def summary(self) -> dict:
        """What browsers and the API get: the figures, the status and a few facts."""
        summary = {name: getattr(self, name) for name in FIGURES}
        summary.update(
            at=self.at.timestamp(),
            status=self.status,
            detail=self.data.get("detail", ""),
            detail_said=self.data.get("detail_said"),
            uptime=self.data.get("uptime"),
            devices=(self.data.get("gpu") or {}).get("devices", []),
            nvml=self.data.get("nvml", ""),
            nvml_said=self.data.get("nvml_said"),
            tokens_per_second=self.data.get("tokens_per_second"),
            engine=self.data.get("engine"),
            standby=self.data.get("standby"),
        )
        return summary
