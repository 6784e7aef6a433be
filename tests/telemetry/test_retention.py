"""Bounded storage: per-minute rollups of raw samples, and pruning of both."""

from datetime import UTC, datetime, timedelta

import pytest

from console.telemetry.models import Sample
from console.telemetry.retention import prune, rollup
from tests.factories import process_instance

NOW = datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC)


def raw(instance, at, **figures):
    return Sample.objects.create(instance=instance, at=at, status=figures.pop("status", "ready"), **figures)


@pytest.mark.django_db
def test_complete_minutes_roll_up_once_with_means_worsts_and_sums():
    instance = process_instance("roll-a", command=["true"])
    minute = NOW.replace(second=0) - timedelta(minutes=2)
    raw(instance, minute + timedelta(seconds=5), p50_ms=10.0, p95_ms=20.0, log_errors=1, established=4)
    raw(
        instance,
        minute + timedelta(seconds=35),
        p50_ms=30.0,
        p95_ms=90.0,
        log_errors=2,
        established=6,
        status="degraded",
    )
    raw(instance, minute + timedelta(minutes=1, seconds=5), p50_ms=5.0)
    raw(instance, NOW, p50_ms=1.0)  # the current minute is not complete yet
    assert rollup(NOW) == 2
    first = Sample.objects.get(resolution=Sample.MINUTE, at=minute)
    assert first.p50_ms == 20.0 and first.p95_ms == 90.0  # mean, worst
    assert first.log_errors == 3 and first.established == 5  # sum, mean
    assert first.status == "degraded" and first.data == {"samples": 2}
    assert rollup(NOW) == 0  # nothing rolled up twice
    assert rollup(NOW + timedelta(minutes=1)) == 1


@pytest.mark.django_db
def test_prune_keeps_raw_for_a_day_and_minutes_for_a_month():
    instance = process_instance("roll-b", command=["true"])
    raw(instance, NOW - timedelta(hours=25))
    kept = raw(instance, NOW - timedelta(hours=23))
    Sample.objects.create(instance=instance, at=NOW - timedelta(days=31), resolution=Sample.MINUTE, status="ready")
    month = Sample.objects.create(
        instance=instance, at=NOW - timedelta(days=29), resolution=Sample.MINUTE, status="ready"
    )
    assert prune(NOW) == 2
    assert set(Sample.objects.values_list("pk", flat=True)) == {kept.pk, month.pk}


@pytest.mark.django_db
def test_each_instance_rolls_up_from_its_own_newest_rollup_and_is_pruned_alone():
    behind, new = process_instance("roll-c", command=["true"]), process_instance("roll-d", command=["true"])
    process_instance("roll-quiet", command=["true"])  # no samples at all
    end = NOW.replace(second=0)
    Sample.objects.create(instance=behind, at=end - timedelta(minutes=3), resolution=Sample.MINUTE, status="ready")
    for minutes in (4, 2, 1):  # the one 4 minutes back is already in a rollup's past: never rolled again
        raw(behind, end - timedelta(minutes=minutes, seconds=-10), p95_ms=float(minutes))
    for hours in (3, 2):
        raw(new, end - timedelta(hours=hours), p95_ms=float(hours))
    assert rollup(NOW) == 4
    rolled = {
        (s.instance.name, int((end - s.at).total_seconds() // 60)): s.p95_ms
        for s in Sample.objects.filter(resolution=Sample.MINUTE).exclude(at=end - timedelta(minutes=3))
    }
    assert rolled == {("roll-c", 2): 2.0, ("roll-c", 1): 1.0, ("roll-d", 180): 3.0, ("roll-d", 120): 2.0}
    raw(new, NOW - timedelta(hours=25))
    assert prune(NOW) == 1 and Sample.objects.filter(instance=new, resolution=Sample.RAW).count() == 2
