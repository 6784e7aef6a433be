"""Restarting a group: rolling order, all at once, stop on failure, resume without repeats."""

import sys
import time

import pytest

from console.host.process import ProcessRuntime
from console.operations.models import Operation, Rollout
from console.operations.rollout import advance, request_rollout
from tests.conftest import wait_http


def wait_finished(rollout: Rollout, timeout: float = 120) -> Rollout:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rollout.refresh_from_db()
        if rollout.is_finished:
            return rollout
        time.sleep(0.3)
    raise AssertionError(f"rollout still {rollout.state}: {rollout.results}")


def started(*instances):
    for instance in instances:
        ProcessRuntime().start(instance)
    for instance in instances:
        wait_http(instance.base_url + "/health/ready", timeout=90)


def test_rolling_restart_waits_for_each_instance_to_be_ready(managed, worker):
    a, b = managed("roll-a", group="pair"), managed("roll-b", group="pair")
    started(a, b)
    rollout = wait_finished(request_rollout([a, b], reason="nightly"))
    assert rollout.state == "succeeded", rollout.results
    first, second = (Operation.objects.get(rollout=rollout, instance=i) for i in (a, b))
    assert first.state == second.state == "succeeded"
    assert second.started >= first.finished  # the next one only after the previous was ready
    assert [r["instance"] for r in rollout.results] == ["roll-a", "roll-b"]


def test_all_at_once_overlaps(managed, worker):
    a, b = managed("all-a"), managed("all-b")
    started(a, b)
    rollout = wait_finished(request_rollout([a, b], strategy="all"))
    assert rollout.state == "succeeded", rollout.results
    first, second = (Operation.objects.get(rollout=rollout, instance=i) for i in (a, b))
    assert second.started < first.finished and first.started < second.finished


def test_a_failed_restart_stops_a_rolling_rollout(managed, worker, tmp_path):
    broken = managed("roll-broken", command=[sys.executable, "-c", "import sys; sys.exit(3)"], ready_timeout=5)
    healthy = managed("roll-next")
    started(healthy)
    rollout = wait_finished(request_rollout([broken, healthy]))
    assert rollout.state == "failed" and rollout.error.startswith("roll-broken:")
    assert rollout.results[1] == {
        "instance": "roll-next",
        "operation": None,
        "state": "not started",
        "detail": "stopped after roll-broken failed",
    }
    assert not Operation.objects.filter(instance=healthy, rollout=rollout).exists()


@pytest.mark.django_db(transaction=True)
def test_a_resumed_rollout_reuses_its_operations(managed):
    a = managed("resume-a")
    rollout = Rollout.objects.create(instance_names=["resume-a", "gone"], state="running")
    done = Operation.objects.create(instance=a, kind="restart", state="succeeded", rollout=rollout)
    result = advance(rollout.pk)
    assert result.state == "succeeded"
    assert Operation.objects.filter(instance=a).count() == 1  # not restarted a second time
    assert result.results == [
        {"instance": "gone", "operation": None, "state": "skipped", "detail": "no such instance any more"},
        {"instance": "resume-a", "operation": done.pk, "state": "succeeded", "detail": ""},
    ]
