"""The operation and step duration histograms: every ended operation counted, each read once per
process, the same figures as reading them all again."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console.api.durations import Durations
from console.api.models import KeptDurations
from console.operations.models import Operation
from tests.factories import process_instance


def ended(instance, seconds: float, state="succeeded", steps=None) -> Operation:
    finished = timezone.now()
    return Operation.objects.create(
        instance=instance,
        kind="restart",
        state=state,
        started=finished - timedelta(seconds=seconds),
        finished=finished,
        steps=steps or [{"name": "drain", "state": "done", "seconds": seconds / 2}],
    )


def figures(durations: Durations) -> tuple[dict, dict]:
    operations, steps = durations.read()
    return operations.rows, steps.rows


@pytest.mark.django_db
def test_each_ended_operation_is_read_once_and_counted_as_a_fresh_read_counts_it():
    a, b = process_instance("dur-a", command=["true"]), process_instance("dur-b", command=["true"])
    kept = Durations()
    first = ended(a, 4)
    running = Operation.objects.create(instance=b, kind="restart", state="running", started=timezone.now())
    later = ended(a, 40, state="failed", steps=[{"name": "ready", "state": "failed", "seconds": 30}])
    operations, steps = figures(kept)
    assert operations[("restart", "succeeded")][-2:] == [1, 4.0] and operations[("restart", "failed")][-2] == 1
    assert steps[("restart", "ready", "failed")][-2:] == [1, 30.0]
    assert kept.upto == first.pk  # the running one holds the mark: the one after it is read again

    with CaptureQueriesContext(connection) as queries:
        assert figures(kept) == figures(Durations())
    read = [q["sql"] for q in queries.captured_queries if '"steps"' in q["sql"] and "keptdurations" not in q["sql"]]
    assert len(read) == 2 and f"> {first.pk}" in read[0].replace('"id" >', ">").split("WHERE")[1]

    Operation.objects.filter(pk=running.pk).update(
        state="succeeded",
        finished=running.started + timedelta(seconds=2.5),
        steps=[{"name": "restart (whole process)", "state": "done", "seconds": 2.0}],
    )
    operations, steps = figures(kept)
    assert operations[("restart", "succeeded")][-2] == 2 and steps[("restart", "restart whole", "done")][-2] == 1
    assert kept.upto == later.pk and (operations, steps) == figures(Durations())
    buckets = operations[("restart", "succeeded")]
    assert buckets[:3] == [0, 0, 2]  # 2.5 s and 4 s: le 5 holds both, le 2 neither


@pytest.mark.django_db
def test_operations_gone_or_changed_below_the_mark_are_all_read_again():
    """A test database rolled back, an operation deleted by hand: the kept figures would count what is
    no longer there."""
    instance = process_instance("dur-c", command=["true"])
    kept = Durations()
    gone, stays = ended(instance, 3), ended(instance, 100)
    assert figures(kept)[0][("restart", "succeeded")][-2] == 2
    gone.delete()
    operations = figures(kept)[0]
    assert operations[("restart", "succeeded")][-2:] == [1, 100.0]
    Operation.objects.filter(pk=stays.pk).update(finished=stays.finished + timedelta(seconds=50))
    assert figures(kept)[0][("restart", "succeeded")][-2:] == [1, 150.0]


def kept_value() -> dict:
    return KeptDurations.objects.get().value


@pytest.mark.django_db
def test_a_process_started_later_reads_on_from_what_another_kept():
    """A deploy's new console process, or the console after a reboot: its first scrape reads only what
    ended after the kept mark."""
    instance = process_instance("dur-d", command=["true"])
    first, second = ended(instance, 3), ended(instance, 700)
    kept = figures(Durations())
    assert kept_value()["upto"] == second.pk
    third = ended(instance, 12, steps=[{"name": "ready", "state": "done", "seconds": 11}])

    later = Durations()
    with CaptureQueriesContext(connection) as queries:
        operations, steps = figures(later)
    read = [q["sql"] for q in queries.captured_queries if '"steps"' in q["sql"] and "keptdurations" not in q["sql"]]
    assert len(read) == 1 and f"> {second.pk}" in read[0].replace('"id" >', ">").split("WHERE")[1]
    assert operations[("restart", "succeeded")][-2:] == [3, 715.0] and steps[("restart", "ready", "done")][-2] == 1
    assert kept[0][("restart", "succeeded")][-2] == 2 and later.upto == third.pk
    assert KeptDurations.objects.count() == 1 and kept_value()["upto"] == third.pk

    first.delete()  # below the kept mark: another process started now reads everything again
    assert figures(Durations())[0][("restart", "succeeded")][-2:] == [2, 712.0]
    assert kept_value()["seen"] == 2


ZEROS = [0] * 12 + [0, 0.0]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "mark, durations",
    [
        ("x", []),  # a mark that is not one
        ({"upto": "1"}, []),
        ({}, "not a list"),
        ({}, [[["restart"], ZEROS]]),  # one label value short
        ({}, [[["restart", "succeeded"], [5] * 14]]),  # buckets that do not add up to the count
        ({}, [[["restart", "succeeded"], [-1, 1] + ZEROS[2:]]]),
        ({"seen": 0}, [[["restart", "succeeded"], ZEROS]]),  # a tally, but not of what is there
    ],
)
def test_what_the_database_keeps_is_taken_only_when_it_is_a_tally_of_what_is_there(mark, durations):
    """A row an older version wrote, or one edited by hand: a malformed value is ignored and the history
    read, never a failed scrape or a made-up figure, even with the right count and latest end beside it."""
    instance = process_instance("dur-e", command=["true"])
    operation = ended(instance, 4)
    planted = {"upto": 10**6, "seen": 1, "latest": operation.finished.isoformat(), "durations": durations, "steps": []}
    KeptDurations.objects.create(pk=1, value={**planted, **mark} if isinstance(mark, dict) else mark)
    assert figures(Durations())[0] == {("restart", "succeeded"): [0, 0, 1] + [0] * 9 + [1, 4.0]}
    assert kept_value()["upto"] == operation.pk  # kept anew


@pytest.mark.django_db
def test_the_start_command_counts_the_history_so_the_first_scrape_need_not():
    """deploy/console-start.sh and the systemd web unit run it after migrate: after an upgrade the whole
    history is read there (10 s at 500 instances and a year), not by Prometheus's first scrape."""
    instance = process_instance("dur-g", command=["true"])
    ended(instance, 3), ended(instance, 30)
    last = ended(instance, 300)
    out = StringIO()
    call_command("keep_durations", stdout=out)
    assert f"kept up to #{last.pk}: 3 operation(s) counted" in out.getvalue()
    assert kept_value()["upto"] == last.pk and kept_value()["seen"] == 3
    first_scrape = Durations()
    with CaptureQueriesContext(connection) as queries:
        assert figures(first_scrape)[0][("restart", "succeeded")][-2:] == [3, 333.0]
    read = [q["sql"] for q in queries.captured_queries if '"steps"' in q["sql"] and "keptdurations" not in q["sql"]]
    assert len(read) == 1 and f"> {last.pk}" in read[0].replace('"id" >', ">").split("WHERE")[1]
