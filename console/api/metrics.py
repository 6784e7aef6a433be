"""The console's figures for Prometheus, read from the database at each scrape.

The numbers live in several processes (each host's worker samples, any worker runs operations), and
all of them end in the database: a collector that reads it at scrape time is right whichever process
answers, with no multiprocess files to share. Counters are counts of rows that are never deleted
(operations, rollouts, schedule runs, alert deliveries), so they only grow; the duration histograms
read each ended operation once per process (durations.py), not the whole history at every scrape.
"""

from collections import Counter

from django.db.models import Count, Max, OuterRef, Subquery, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from console.alerts.models import AlertDelivery
from console.api.durations import DURATIONS
from console.instances.holds import active_holds
from console.instances.models import Host, Instance
from console.operations.models import Operation, Rollout
from console.operations.summaries import last_operations
from console.schedules.models import ScheduleRun
from console.telemetry.latest import is_fresh, latest_samples
from console.telemetry.rules import log_disk_free, log_rotation
from console.watchdog.models import Watchdog

PREFIX = "instance_console"
STATUSES = ("ready", "loading", "degraded", "draining", "down", "unknown")
# A schedule run's reason, as a label of few values (the sentence itself says minutes and names).
SKIP_REASONS = (
    ("missed by", "missed"),
    ("outside the maintenance window", "outside_window"),
    ("no enabled instance", "no_instance"),
)


def skip_reason(reason: str) -> str:
    return next((label for start, label in SKIP_REASONS if reason.startswith(start)), "other")


def _last_effects() -> dict[int, dict]:
    """{instance id: p95 before and after (ms)} of each instance's last operation whose effect was kept
    with both figures, in one query: a subquery per instance, not its whole history."""
    measured = Operation.objects.filter(
        instance=OuterRef("pk"), p95_before_ms__isnull=False, p95_after_ms__isnull=False
    ).exclude(effect_settled=None)
    last = Instance.objects.annotate(last=Subquery(measured.order_by("-finished").values("pk")[:1])).values("last")
    rows = Operation.objects.filter(pk__in=last).values_list("instance_id", "p95_before_ms", "p95_after_ms")
    return {instance_id: {"before": before, "after": after} for instance_id, before, after in rows}


class ConsoleCollector(Collector):
    def __init__(self, scrape_token=None):
        self.scrape_token = scrape_token  # the ApiToken this scrape presents, if any

    def collect(self):
        now = timezone.now()
        yield from self._instances(now)
        yield from self._operations()
        yield from self._rollouts_and_schedules()
        yield from self._alerts()
        yield from self._scrape_token()

    def _scrape_token(self):
        """When the scraper's own token expires: once it has, every scrape is a 401 and every rule over
        these figures goes quiet, so the rules warn ahead (a token that never expires has no figure)."""
        if self.scrape_token is None or self.scrape_token.expires is None:
            return
        expiry = GaugeMetricFamily(
            f"{PREFIX}_scrape_token_expiry_timestamp_seconds",
            "When the API token presented by this scrape expires (Unix time).",
            labels=["token"],
        )
        expiry.add_metric([self.scrape_token.prefix], self.scrape_token.expires.timestamp())
        yield expiry

    def _instances(self, now):
        instances = list(Instance.objects.select_related("host").order_by("name"))
        samples, last = latest_samples(instances), last_operations(instances)
        dogs = {d.instance_id: d for d in Watchdog.objects.filter(instance__in=instances)}
        last_restart = dict(
            Operation.objects.filter(
                state=Operation.State.SUCCEEDED, kind__in=[Operation.Kind.START, Operation.Kind.RESTART]
            )
            .order_by()
            .values("instance_id")
            .annotate(last=Max("finished"))
            .values_list("instance_id", "last")
        )
        labels = ["instance_name", "host", "group"]  # "instance" is Prometheus's own target label
        status = GaugeMetricFamily(
            f"{PREFIX}_instance_status",
            "1 for the instance's status now (from its latest fresh sample; unknown when none is fresh)",
            labels=[*labels, "status"],
        )
        up = GaugeMetricFamily(
            f"{PREFIX}_instance_up",
            "1 when the instance's health probe answered in its latest fresh sample",
            labels=labels,
        )
        ready = GaugeMetricFamily(f"{PREFIX}_instance_ready", "1 when the instance is ready to serve", labels=labels)
        operating = GaugeMetricFamily(
            f"{PREFIX}_instance_operation_active", "1 while an operation runs on the instance", labels=labels
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_instance_sample_age_seconds", "Seconds since the instance's latest sample", labels=labels
        )
        figures = {
            "gpu_used": (
                f"{PREFIX}_instance_gpu_memory_used_bytes",
                "GPU memory held by the instance's processes (NVML)",
            ),
            "gpu_total": (f"{PREFIX}_instance_gpu_memory_total_bytes", "Total memory of the instance's GPUs"),
            "reserved": (
                f"{PREFIX}_instance_allocator_reserved_bytes",
                "Memory the torch allocator holds from the driver",
            ),
            "allocated": (f"{PREFIX}_instance_allocator_allocated_bytes", "Memory in live tensors"),
            "in_flight": (f"{PREFIX}_instance_requests_in_flight", "Requests the server is answering"),
            "close_wait": (
                f"{PREFIX}_instance_connections_close_wait",
                "Connections in CLOSE_WAIT on the server's port",
            ),
            "established": (
                f"{PREFIX}_instance_connections_established",
                "Established connections on the server's port",
            ),
        }
        gauges = {name: GaugeMetricFamily(metric, text, labels=labels) for name, (metric, text) in figures.items()}
        p95 = GaugeMetricFamily(
            f"{PREFIX}_instance_latency_p95_seconds", "p95 request latency the server reports", labels=labels
        )
        uptime = GaugeMetricFamily(
            f"{PREFIX}_instance_uptime_seconds", "Seconds since the serving process started", labels=labels
        )
        restart_at = GaugeMetricFamily(
            f"{PREFIX}_instance_last_restart_timestamp_seconds",
            "When the last start or restart through the console succeeded",
            labels=labels,
        )
        attention = GaugeMetricFamily(
            f"{PREFIX}_watchdog_needs_attention",
            "1 when the watchdog stopped acting and an operator must look",
            labels=labels,
        )
        watched = GaugeMetricFamily(f"{PREFIX}_watchdog_enabled", "1 when the instance's watchdog is on", labels=labels)
        disk_free = GaugeMetricFamily(
            f"{PREFIX}_instance_log_disk_free_ratio",
            "Share of the disk that holds the instance's log still free, bytes or inodes whichever is less "
            "(a full one blocks the server's writes); none where the worker cannot see it (a container's)",
            labels=labels,
        )
        rotated = GaugeMetricFamily(
            f"{PREFIX}_instance_log_rotated",
            "0 when the instance's log grows without limit (a container's json-file log without max-size, or "
            "the console's rotation turned off), 1 when it is rotated or kept by another logging driver",
            labels=labels,
        )
        effect = {
            side: GaugeMetricFamily(
                f"{PREFIX}_instance_last_effect_p95_{side}_seconds",
                f"p95 latency {side} the instance's last restart or soft reset whose effect was measured "
                "(medians over the windows before it began and after it ended)",
                labels=labels,
            )
            for side in ("before", "after")
        }
        held = GaugeMetricFamily(
            f"{PREFIX}_instance_on_hold",
            "1 while the instance is on hold: automation leaves it alone, its alerts are silenced",
            labels=labels,
        )
        holds = active_holds(instances, now)
        effects = _last_effects()
        host_age: dict[str, float] = {}
        for instance in instances:
            values = [instance.name, instance.host.name, instance.group]
            sample = samples.get(instance.pk)
            fresh = is_fresh(sample, now)
            current = sample.status if fresh else "unknown"
            for name in STATUSES:
                status.add_metric([*values, name], 1.0 if current == name else 0.0)
            up.add_metric(values, 1.0 if fresh and sample.probe_ok else 0.0)
            ready.add_metric(values, 1.0 if current == "ready" else 0.0)
            operation = last.get(instance.pk)
            operating.add_metric(values, 1.0 if operation is not None and not operation.is_finished else 0.0)
            if sample is not None:
                seconds = (now - sample.at).total_seconds()
                age.add_metric(values, seconds)
                host_age[instance.host.name] = min(seconds, host_age.get(instance.host.name, seconds))
                for name, gauge in gauges.items():
                    if getattr(sample, name) is not None:
                        gauge.add_metric(values, float(getattr(sample, name)))
                if sample.p95_ms is not None:
                    p95.add_metric(values, sample.p95_ms / 1000)
                if isinstance(sample.data.get("uptime"), int | float):
                    uptime.add_metric(values, float(sample.data["uptime"]))
                if (free := log_disk_free(sample.data.get("log_disk"))) is not None:
                    disk_free.add_metric(values, free["least"])
                if (kept := log_rotation(sample.data.get("log_rotation"))) is not None:
                    rotated.add_metric(values, 1.0 if kept["rotated"] else 0.0)
            if instance.pk in last_restart and last_restart[instance.pk]:
                restart_at.add_metric(values, last_restart[instance.pk].timestamp())
            dog = dogs.get(instance.pk)
            watched.add_metric(values, 1.0 if dog is not None and dog.enabled else 0.0)
            attention.add_metric(values, 1.0 if dog is not None and dog.needs_attention_since else 0.0)
            held.add_metric(values, 1.0 if instance.pk in holds else 0.0)
            if instance.pk in effects:
                for side, gauge in effect.items():
                    gauge.add_metric(values, effects[instance.pk][side] / 1000)
        hosts = GaugeMetricFamily(
            f"{PREFIX}_host_sample_age_seconds",
            "Seconds since the newest sample of the host's instances: a silent worker shows here",
            labels=["host"],
        )
        for host, seconds in sorted(host_age.items()):
            hosts.add_metric([host], seconds)
        reports = GaugeMetricFamily(
            f"{PREFIX}_host_report_age_seconds",
            "Seconds since the host's worker last reported (every sampling round, instances or not)",
            labels=["host"],
        )
        for name, seen_at in Host.objects.exclude(seen_at=None).values_list("name", "seen_at").order_by("name"):
            reports.add_metric([name], (now - seen_at).total_seconds())
        yield from (
            reports,
            status,
            up,
            ready,
            operating,
            age,
            *gauges.values(),
            p95,
            uptime,
            disk_free,
            rotated,
            restart_at,
            *effect.values(),
            watched,
            attention,
            held,
            hosts,
        )

    def _operations(self):
        total = CounterMetricFamily(
            f"{PREFIX}_operations",
            "Operations ended, by kind, trigger and outcome",
            labels=["kind", "trigger", "state"],
        )
        active = GaugeMetricFamily(
            f"{PREFIX}_operations_active", "Operations queued or running", labels=["kind", "state"]
        )
        for row in Operation.objects.order_by().values("kind", "trigger", "state").annotate(n=Count("pk")):
            if row["state"] in Operation.ACTIVE_STATES:
                continue
            total.add_metric([row["kind"], row["trigger"], row["state"]], row["n"])
        counted = Counter(Operation.objects.filter(state__in=Operation.ACTIVE_STATES).values_list("kind", "state"))
        for kind in Operation.Kind.values:
            for state in Operation.ACTIVE_STATES:
                active.add_metric([kind, state], counted.get((kind, state), 0))
        durations, steps = DURATIONS.read()
        effects = CounterMetricFamily(
            f"{PREFIX}_operation_effects",
            "Restarts and soft resets whose effect was measured, by kind, trigger and what p95 latency did "
            "(lower, same, higher; unmeasured without samples on both sides)",
            labels=["kind", "trigger", "change"],
        )
        for row in (
            Operation.objects.exclude(effect_settled=None)
            .order_by()
            .values("kind", "trigger", "p95_change")
            .annotate(n=Count("pk"))
        ):
            effects.add_metric([row["kind"], row["trigger"], row["p95_change"] or "unmeasured"], row["n"])
        yield total
        yield active
        yield effects
        yield durations.family(
            f"{PREFIX}_operation_duration_seconds", "How long operations took, start to end", ["kind", "state"]
        )
        yield steps.family(
            f"{PREFIX}_operation_step_duration_seconds",
            "How long each step of an operation took",
            ["kind", "step", "state"],
        )

    def _rollouts_and_schedules(self):
        rollouts = CounterMetricFamily(
            f"{PREFIX}_rollouts",
            "Rollouts requested, by strategy, trigger and state",
            labels=["strategy", "trigger", "state"],
        )
        for row in Rollout.objects.order_by().values("strategy", "trigger", "state").annotate(n=Count("pk")):
            rollouts.add_metric([row["strategy"], row["trigger"], row["state"]], row["n"])
        yield rollouts
        runs = CounterMetricFamily(
            f"{PREFIX}_schedule_runs",
            "Schedule runs, started or skipped (and why)",
            labels=["schedule", "state", "reason"],
        )
        counted = Counter()
        for name, state, reason in ScheduleRun.objects.values_list("schedule__name", "state", "reason"):
            counted[(name, state, "" if state == ScheduleRun.State.STARTED else skip_reason(reason))] += 1
        for key, n in sorted(counted.items()):
            runs.add_metric(list(key), n)
        yield runs

    def _alerts(self):
        deliveries = CounterMetricFamily(
            f"{PREFIX}_alert_deliveries",
            "Alerts, by channel, event and state (pending, sent, failed, silenced)",
            labels=["channel", "event", "state"],
        )
        attempts = CounterMetricFamily(
            f"{PREFIX}_alert_delivery_attempts", "Delivery attempts, failed ones included", labels=["channel"]
        )
        rows = (
            AlertDelivery.objects.order_by()
            .values("channel__name", "event", "state")
            .annotate(n=Count("pk"), tries=Sum("attempts"))
        )
        tries: Counter = Counter()
        for row in rows:
            deliveries.add_metric([row["channel__name"], row["event"], row["state"]], row["n"])
            tries[row["channel__name"]] += row["tries"] or 0
        for channel, n in sorted(tries.items()):
            attempts.add_metric([channel], n)
        yield deliveries
        yield attempts
