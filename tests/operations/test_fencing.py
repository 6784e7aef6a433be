"""Exactly one attempt drives an operation: a worker whose operation was taken over stops, and an
operation is failed as lost only when its heartbeat is silent, never for lasting long."""

from datetime import timedelta

import pytest
from django.utils import timezone

from console.operations import progress
from console.operations.models import Operation
from console.operations.pipeline import Busy, Heartbeat, claim
from console.operations.recovery import LOST_AFTER_SECONDS, recover_operations
from tests.factories import process_instance


@pytest.fixture
def operation(db):
    instance = process_instance("fence-a", command=["true"])
    return Operation.objects.create(instance=instance, kind="restart")


def silence(operation: Operation, seconds: float) -> None:
    Operation.objects.filter(pk=operation.pk).update(heartbeat=timezone.now() - timedelta(seconds=seconds))


def test_a_taken_over_attempt_can_write_nothing(operation):
    first = claim(operation.pk)
    progress.end_step(first, progress.begin_step(first, "drain"), "done", "drained")
    silence(operation, 60)  # its worker stalled (a database outage, say) ...
    second = claim(operation.pk)  # ... and another took it over
    assert (first.attempts, second.attempts) == (1, 2)
    with pytest.raises(progress.Fenced):
        progress.begin_step(first, "stop")
    with pytest.raises(progress.Fenced):
        progress.finish(first, Operation.State.SUCCEEDED)
    progress.finish(second, Operation.State.SUCCEEDED)
    stored = Operation.objects.get(pk=operation.pk)
    assert stored.state == "succeeded" and [s["name"] for s in stored.steps] == ["drain"]


@pytest.mark.django_db(transaction=True)  # the heartbeat's own connection must see the rows
def test_the_old_attempt_s_heartbeat_notices_it_was_fenced(operation):
    first = claim(operation.pk)
    heartbeat = Heartbeat(first, every=0.05)
    silence(operation, 60)
    claim(operation.pk)
    with heartbeat:
        assert heartbeat.fenced.wait(5)


def test_a_second_delivery_while_the_worker_lives_is_busy(operation):
    claim(operation.pk)
    with pytest.raises(Busy):
        claim(operation.pk)


def test_a_long_operation_with_a_live_worker_is_never_failed(operation):
    claim(operation.pk)
    Operation.objects.filter(pk=operation.pk).update(started=timezone.now() - timedelta(days=1))
    assert recover_operations() == {"sent": [], "failed": []}
    assert Operation.objects.get(pk=operation.pk).state == "running"


def test_a_silent_worker_s_operation_is_sent_again_then_failed_when_nobody_takes_it(operation):
    claim(operation.pk)
    silence(operation, 60)
    assert recover_operations() == {"sent": [operation.pk], "failed": []}
    silence(operation, LOST_AFTER_SECONDS + 5)
    assert recover_operations(fail=False)["failed"] == []  # a host worker's own watch only resends
    assert recover_operations()["failed"] == [operation.pk]
    failed = Operation.objects.get(pk=operation.pk)
    assert failed.state == "failed" and "no worker on queue host.local took it over" in failed.error


def test_a_queued_operation_nobody_takes_is_failed_with_its_host(operation):
    Operation.objects.filter(pk=operation.pk).update(created=timezone.now() - timedelta(hours=2))
    assert recover_operations()["failed"] == [operation.pk]
    assert "is host local's worker running?" in Operation.objects.get(pk=operation.pk).error


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_that_cannot_see_its_row_yet_is_not_fenced():
    """An operation written in a transaction another connection cannot see yet (a test's) is not
    taken for one taken over."""
    instance = process_instance("fence-b", command=["true"])
    operation = Operation.objects.create(instance=instance, kind="restart")
    first = claim(operation.pk)
    Operation.objects.filter(pk=operation.pk).delete()  # gone from every other connection's view
    heartbeat = Heartbeat(first, every=0.05)
    with heartbeat:
        assert not heartbeat.fenced.wait(0.5)
