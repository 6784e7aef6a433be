"""The console's /metrics: Prometheus's format, the figures the database holds, a token to read them."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from console.alerts.models import AlertChannel, AlertDelivery
from console.api.models import ApiToken
from console.operations.holds import place_hold
from console.operations.models import Operation, Rollout
from console.schedules.models import RestartSchedule, ScheduleRun
from console.telemetry.models import Sample
from console.watchdog.models import Watchdog
from tests.factories import process_instance, user


def scrape(key: str) -> dict:
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values: dict, name: str, **labels):
    return values[(name, tuple(sorted(labels.items())))]


@pytest.mark.django_db
def test_metrics_need_a_token_with_the_view_permission():
    assert Client().get("/metrics").status_code == 401
    _, nobody = ApiToken.issue(user("no-role"), "prom")
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {nobody}").status_code == 403


@pytest.mark.django_db
def test_instances_operations_rollouts_schedules_and_alerts_are_counted():
    a = process_instance("met-a", command=["true"], group="g")
    b = process_instance("met-b", command=["true"])
    now = timezone.now()
    Sample.objects.create(
        instance=a,
        at=now,
        status="ready",
        probe_ok=True,
        p95_ms=250.0,
        gpu_used=3 * 2**30,
        close_wait=7,
        data={
            "uptime": 42,
            "log_disk": {"free": 50, "total": 100, "inodes_free": 2, "inodes_total": 100},
            "log_rotation": {"driver": "json-file", "max_bytes": None, "files": 1},  # grows without limit
        },
    )
    Sample.objects.create(instance=b, at=now - timedelta(minutes=10), status="ready", probe_ok=True)  # stale
    Operation.objects.create(
        instance=a,
        kind="restart",
        trigger="watchdog",
        state="succeeded",
        started=now - timedelta(seconds=4),
        finished=now,
        steps=[{"name": "drain", "state": "done", "seconds": 1.5}, {"name": "ready", "state": "done", "seconds": 2.5}],
    )
    Operation.objects.create(instance=b, kind="stop", state="running", started=now)
    Rollout.objects.create(instance_names=["met-a"], state="succeeded")
    schedule = RestartSchedule.objects.create(name="nightly", cron="0 3 * * *", timezone="UTC")
    ScheduleRun.objects.create(
        schedule=schedule, planned_for=now, fired_at=now, state="skipped", reason="missed by 61 min (grace 30 min)"
    )
    Watchdog.objects.create(instance=a, needs_attention_since=now)
    channel = AlertChannel.objects.create(name="hook", url="http://127.0.0.1:9/x")
    AlertDelivery.objects.create(
        channel=channel, event="watchdog", instance_name="met-a", title="t", text="x", state="failed", attempts=5
    )
    _, key = ApiToken.issue(user("prom", "viewer"), "prometheus")
    place_hold(b, minutes=30, reason="driver upgrade")

    values = scrape(key)
    a_labels = {"instance_name": "met-a", "host": "local", "group": "g"}
    b_labels = {"instance_name": "met-b", "host": "local", "group": ""}
    assert value(values, "instance_console_instance_on_hold", **a_labels) == 0
    assert value(values, "instance_console_instance_on_hold", **b_labels) == 1
    assert value(values, "instance_console_instance_ready", **a_labels) == 1
    assert value(values, "instance_console_instance_status", status="unknown", **b_labels) == 1  # stale sample
    assert value(values, "instance_console_instance_ready", **b_labels) == 0
    assert value(values, "instance_console_instance_operation_active", **b_labels) == 1
    assert value(values, "instance_console_instance_latency_p95_seconds", **a_labels) == 0.25
    assert value(values, "instance_console_instance_gpu_memory_used_bytes", **a_labels) == 3 * 2**30
    assert value(values, "instance_console_instance_connections_close_wait", **a_labels) == 7
    assert value(values, "instance_console_instance_uptime_seconds", **a_labels) == 42
    assert value(values, "instance_console_instance_log_disk_free_ratio", **a_labels) == 0.02  # inodes, the less
    assert ("instance_console_instance_log_disk_free_ratio", tuple(sorted(b_labels.items()))) not in values
    assert value(values, "instance_console_instance_log_rotated", **a_labels) == 0
    assert ("instance_console_instance_log_rotated", tuple(sorted(b_labels.items()))) not in values
    assert value(values, "instance_console_watchdog_needs_attention", **a_labels) == 1
    assert value(values, "instance_console_instance_last_restart_timestamp_seconds", **a_labels) == pytest.approx(
        now.timestamp()
    )
    assert value(values, "instance_console_host_sample_age_seconds", host="local") < 5
    assert (
        value(values, "instance_console_operations_total", kind="restart", trigger="watchdog", state="succeeded") == 1
    )
    assert value(values, "instance_console_operations_active", kind="stop", state="running") == 1
    assert value(values, "instance_console_operation_duration_seconds_count", kind="restart", state="succeeded") == 1
    assert (
        value(values, "instance_console_operation_duration_seconds_bucket", kind="restart", state="succeeded", le="5")
        == 1
    )
    assert (
        value(
            values, "instance_console_operation_step_duration_seconds_sum", kind="restart", step="ready", state="done"
        )
        == 2.5
    )
    assert (
        value(values, "instance_console_rollouts_total", strategy="rolling", trigger="manual", state="succeeded") == 1
    )
    assert (
        value(values, "instance_console_schedule_runs_total", schedule="nightly", state="skipped", reason="missed") == 1
    )
    assert (
        value(values, "instance_console_alert_deliveries_total", channel="hook", event="watchdog", state="failed") == 1
    )
    assert value(values, "instance_console_alert_delivery_attempts_total", channel="hook") == 5


@pytest.mark.django_db
def test_a_scrape_learns_when_its_own_token_expires():
    """The figure the rules warn with before the scraper's token runs out; none for a token that never
    expires or for a signed-in browser, and another token's expiry is never shown."""
    viewer = user("prom", "viewer")
    expiring, key = ApiToken.issue(viewer, "prometheus", days=10)
    _, other = ApiToken.issue(viewer, "other", days=365)
    _, forever = ApiToken.issue(viewer, "for ever")
    name = "instance_console_scrape_token_expiry_timestamp_seconds"

    values = scrape(key)
    assert value(values, name, token=expiring.prefix) == pytest.approx(expiring.expires.timestamp())
    assert [k for k in values if k[0] == name] == [(name, (("token", expiring.prefix),))]
    assert not [k for k in scrape(forever) if k[0] == name]
    assert [k[1] for k in scrape(other) if k[0] == name] != [(("token", expiring.prefix),)]

    browser = Client()
    browser.force_login(viewer)
    page = browser.get("/metrics")
    assert page.status_code == 200 and "instance_console_instance_up" in page.content.decode()
    assert name not in page.content.decode()


@pytest.mark.django_db
def test_what_each_restart_did_to_latency_is_counted_and_each_instances_last_is_shown():
    a = process_instance("eff-met-a", command=["true"])
    b = process_instance("eff-met-b", command=["true"])
    process_instance("eff-met-c", command=["true"])  # never restarted: no figure
    now = timezone.now()

    def restarted(instance, hours_ago, trigger, before, after, change, kind="restart"):
        Operation.objects.create(
            instance=instance,
            kind=kind,
            trigger=trigger,
            state="succeeded",
            started=now - timedelta(hours=hours_ago),
            finished=now - timedelta(hours=hours_ago) + timedelta(seconds=20),
            p95_before_ms=before,
            p95_after_ms=after,
            p95_change=change,
            effect_settled=now,
        )

    restarted(a, 48, "schedule", 900.0, 300.0, "lower")
    restarted(a, 24, "schedule", 310.0, 305.0, "same")  # a's last
    restarted(b, 30, "watchdog", 400.0, 1200.0, "higher")  # b's last measured on both sides
    restarted(b, 2, "watchdog", None, 500.0, "", kind="soft_reset")  # no samples before it
    Operation.objects.create(
        instance=b, kind="restart", trigger="manual", state="succeeded", started=now, finished=now
    )  # still measured: not counted
    _, key = ApiToken.issue(user("prom-eff", "viewer"), "prom")
    values = scrape(key)
    effects = "instance_console_operation_effects_total"
    assert value(values, effects, kind="restart", trigger="schedule", change="lower") == 1
    assert value(values, effects, kind="restart", trigger="schedule", change="same") == 1
    assert value(values, effects, kind="restart", trigger="watchdog", change="higher") == 1
    assert value(values, effects, kind="soft_reset", trigger="watchdog", change="unmeasured") == 1
    assert not any(name == effects and dict(labels)["trigger"] == "manual" for name, labels in values)
    before, after = (
        "instance_console_instance_last_effect_p95_before_seconds",
        "instance_console_instance_last_effect_p95_after_seconds",
    )
    shown = {
        dict(labels)["instance_name"]: (values[(before, labels)], values[(after, labels)])
        for name, labels in values
        if name == before
    }
    assert shown == {"eff-met-a": (0.31, 0.305), "eff-met-b": (0.4, 1.2)}
