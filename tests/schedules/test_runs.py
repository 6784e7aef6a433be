"""What a beat firing does: run once per planned time, late within grace, never outside the window."""

from datetime import UTC, datetime, time, timedelta

import pytest
from django.utils import translation

from console.operations.models import Rollout
from console.schedules.models import RestartSchedule, ScheduleRun
from console.schedules.runs import fire
from console.telemetry.models import Sample
from tests.factories import process_instance

PLANNED = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)  # 03:00 in Shanghai


@pytest.fixture
def schedule(db):
    process_instance("gpu-a-1", command=["true"], group="gpu-a")
    process_instance("gpu-a-2", command=["true"], group="gpu-a")
    process_instance("gpu-a-off", command=["true"], group="gpu-a", enabled=False)
    return RestartSchedule.objects.create(
        name="nightly", cron="0 3 * * *", timezone="Asia/Shanghai", group="gpu-a", grace_minutes=30
    )


def test_on_time_run_starts_a_rolling_rollout_of_the_group(schedule):
    run = fire(schedule.pk, now=PLANNED + timedelta(seconds=3))
    assert run.state == "started" and run.planned_for == PLANNED
    rollout = run.rollout
    assert rollout.instance_names == ["gpu-a-1", "gpu-a-2"] and rollout.strategy == "rolling"
    assert rollout.trigger == "schedule" and "nightly" in rollout.reason and "03:00 CST" in rollout.reason


def test_a_schedule_that_reloads_the_weights_asks_it_of_each_restart(schedule):
    """The schedule's choice reaches its rollout, each restart the rollout starts, and is said when
    the rollout joins a restart already running that keeps the weights."""
    from console.operations.models import Operation
    from console.operations.rollout import advance

    schedule.reload_weights = True
    schedule.strategy = Rollout.Strategy.ALL
    schedule.save()
    running = Operation.objects.create(instance=schedule.targets()[1], kind="restart", state="running")
    rollout = fire(schedule.pk, now=PLANNED + timedelta(seconds=3)).rollout
    assert rollout.reload_weights
    advance(rollout.pk)
    started = Operation.objects.get(instance=schedule.targets()[0], rollout=rollout)
    assert started.options == {"reload_weights": True}
    rollout.refresh_from_db()
    joined = next(r for r in rollout.results if r["instance"] == "gpu-a-2")
    assert joined["operation"] == running.pk and "not reloaded" in joined["detail"]
    running.state = "succeeded"
    running.save()
    advance(rollout.pk)  # what was said of the joined restart stays once it has finished
    rollout.refresh_from_db()
    assert "not reloaded" in next(r for r in rollout.results if r["instance"] == "gpu-a-2")["detail"]
    schedule.reload_weights = False
    schedule.save()
    plain = fire(schedule.pk, now=PLANNED + timedelta(days=1, seconds=3)).rollout
    assert not plain.reload_weights


def test_a_second_firing_for_the_same_time_does_nothing(schedule):
    fire(schedule.pk, now=PLANNED + timedelta(seconds=3))
    assert fire(schedule.pk, now=PLANNED + timedelta(seconds=50)) is None
    assert ScheduleRun.objects.count() == 1 and Rollout.objects.count() == 1


def test_missed_run_within_grace_runs_once_on_recovery(schedule):
    run = fire(schedule.pk, now=PLANNED + timedelta(minutes=20))
    assert run.state == "started"


def test_missed_run_beyond_grace_is_recorded_as_skipped(schedule):
    run = fire(schedule.pk, now=PLANNED + timedelta(hours=2, minutes=5))
    assert run.state == "skipped" and run.reason == "missed by 2 h 5 min (grace 30 min)"
    assert run.rollout is None and not Rollout.objects.exists()


def test_outside_the_maintenance_window_is_skipped(schedule):
    schedule.window_start, schedule.window_end = time(1, 0), time(2, 0)
    schedule.save()
    run = fire(schedule.pk, now=PLANNED + timedelta(seconds=5))
    assert run.state == "skipped" and run.reason == "outside the maintenance window"


def test_a_window_across_midnight_bounds_the_rollout(schedule):
    schedule.window_start, schedule.window_end = time(23, 0), time(4, 0)
    schedule.save()
    run = fire(schedule.pk, now=PLANNED + timedelta(seconds=5))
    assert run.state == "started"
    assert run.rollout.not_after == PLANNED + timedelta(hours=1)  # 04:00 Shanghai


def test_paused_or_empty_schedules(schedule):
    schedule.enabled = False
    schedule.save()
    assert fire(schedule.pk, now=PLANNED) is None
    schedule.enabled, schedule.group = True, "nobody"
    schedule.save()
    run = fire(schedule.pk, now=PLANNED)
    assert run.state == "skipped" and run.reason == "no enabled instance to restart"


def test_a_schedule_for_only_those_that_need_it_leaves_a_healthy_instance_running(schedule):
    """The article's check before a restart, made by the nightly run itself: an instance whose checklist
    finds nothing a restart would cure is skipped, saying why; one slower than its baseline (soft decay)
    and one without figures are restarted."""
    from console.operations.models import Operation
    from console.operations.rollout import advance
    from tests.factories import sample_history

    schedule.skip_healthy = True
    schedule.strategy = Rollout.Strategy.ALL
    schedule.save()
    fine, slow = schedule.targets()
    sample_history(fine)
    sample_history(slow, p95_ms=lambda i: 100.0 if i < 5 else 400.0)
    rollout = fire(schedule.pk, now=PLANNED + timedelta(seconds=3)).rollout
    assert rollout.skip_healthy
    with translation.override("zh-hans"):  # a thread that last served a page in Chinese: entries stay English
        by_name = {r["instance"]: r for r in advance(rollout.pk).results}
    assert by_name[fine.name]["state"] == "skipped", by_name
    assert by_name[fine.name]["detail"] == "healthy by its checklist (p95 100 ms, baseline 100 ms)"
    assert not Operation.objects.filter(instance=fine).exists()
    assert Operation.objects.get(instance=slow, rollout=rollout).kind == "restart"

    # Slower than its baseline, short of Diagnose's soft decay (twice): restarted; a little slower: not.
    for p95, restarted in ((170.0, True), (130.0, False)):
        Operation.objects.all().delete()
        Sample.objects.all().delete()
        sample_history(fine, p95_ms=lambda i, p95=p95: 100.0 if i < 5 else p95)
        creeping = advance(Rollout.objects.create(instance_names=[fine.name], skip_healthy=True, strategy="all").pk)
        assert creeping.results[0]["state"] == ("queued" if restarted else "skipped"), (p95, creeping.results)

    # A container's log never rotated: to watch, but a restart does not change it (a new container does).
    Operation.objects.all().delete()
    Sample.objects.all().delete()
    unrotated = {"uptime": 3600, "pids": [10], "server_pid": 10, "log_rotation": {"driver": "json-file"}}
    sample_history(fine, data=unrotated)
    kept = advance(Rollout.objects.create(instance_names=[fine.name], skip_healthy=True, strategy="all").pk)
    assert kept.results[0]["state"] == "skipped" and "never rotated" in kept.results[0]["detail"], kept.results
    Sample.objects.all().delete()
    sample_history(fine, p95_ms=lambda i: 100.0 if i < 5 else 400.0, data=unrotated)  # and slow: restarted
    kept = advance(Rollout.objects.create(instance_names=[fine.name], skip_healthy=True, strategy="all").pk)
    assert kept.results[0]["state"] == "queued", kept.results

    Operation.objects.all().delete()
    Sample.objects.all().delete()
    unknown = advance(Rollout.objects.create(instance_names=[fine.name], skip_healthy=True, strategy="all").pk)
    assert unknown.results[0]["state"] == "queued"  # no recent figures: restarted, as without the choice

    Operation.objects.all().delete()
    sample_history(fine, data={"gpu": {"devices": [{"used": "lots", "total": 1}]}})  # a checklist that raises
    unreadable = advance(Rollout.objects.create(instance_names=[fine.name], skip_healthy=True, strategy="all").pk)
    assert unreadable.results[0]["state"] == "queued"
