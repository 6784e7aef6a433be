"""Watchdog rules on sample histories: what fires, what waits, and when it stops acting."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from console.alerts.models import AlertChannel, AlertDelivery
from console.instances.roles import OPERATOR
from console.operations.models import Operation
from console.telemetry.models import Sample
from console.watchdog.evaluate import evaluate, findings
from console.watchdog.models import Watchdog
from tests.factories import process_instance, user


@pytest.fixture
def dog(db):
    instance = process_instance("dog-a", command=["true"])
    return Watchdog.objects.create(
        instance=instance,
        liveness_failures=3,
        startup_grace_seconds=60,
        p95_limit_ms=500,
        sustain_seconds=60,
        backoff_seconds=300,
        max_actions_per_hour=2,
    )


def samples(dog, count, every=5, uptime=3600, **figures):
    now = timezone.now()
    rows = []
    for i in range(count):
        values = {"status": "ready", "probe_ok": True, "p95_ms": 100.0, "data": {"uptime": uptime + i * every}}
        values.update({k: (v(i) if callable(v) else v) for k, v in figures.items()})
        rows.append(
            Sample.objects.create(instance=dog.instance, at=now - timedelta(seconds=every * (count - 1 - i)), **values)
        )
    return rows


def rules(dog, rows):
    return [f.rule for f in findings(dog, rows, timezone.now())]


def test_liveness_needs_n_failures_in_a_row(dog):
    assert rules(dog, samples(dog, 3, probe_ok=lambda i: i != 1, status="down")) == []
    Sample.objects.all().delete()
    assert rules(dog, samples(dog, 3, probe_ok=False, status="down")) == ["liveness"]


def test_latency_must_stay_high_for_the_sustain_period(dog):
    short = samples(dog, 6, p95_ms=900.0)  # 25 s of it
    assert rules(dog, short) == []
    Sample.objects.all().delete()
    held = samples(dog, 14, p95_ms=900.0)  # 65 s
    assert rules(dog, held) == ["p95_limit"]
    Sample.objects.all().delete()
    dip = samples(dog, 14, p95_ms=lambda i: 100.0 if i == 10 else 900.0)
    assert rules(dog, dip) == []


def test_factor_over_its_own_baseline(dog):
    dog.p95_limit_ms, dog.p95_factor = None, 3.0
    # the process started 10 minutes ago at ~100 ms; now 400 ms for over a minute
    rows = samples(dog, 120, every=5, uptime=0, p95_ms=lambda i: 100.0 if i < 100 else 400.0)
    assert rules(dog, rows) == ["p95_factor"]


def test_other_decay_signs(dog):
    dog.p95_limit_ms = None
    dog.close_wait_limit, dog.fragmentation_limit, dog.gpu_memory_percent, dog.error_burst = 10, 0.5, 90, 3
    rows = samples(
        dog,
        14,
        close_wait=40,
        fragmentation=0.7,
        gpu_used=79 * 2**30,
        gpu_total=80 * 2**30,
        log_errors=lambda i: 5 if i == 13 else 0,
    )
    assert rules(dog, rows) == ["fragmentation", "close_wait", "gpu_memory", "error_burst"]


def test_start_up_grace_protects_a_loading_model(dog):
    dog.startup_grace_seconds = 300
    dog.save()
    samples(dog, 14, p95_ms=900.0, uptime=0)  # a process 65 s old
    assert evaluate(dog.instance) is None
    assert not Operation.objects.exists()


def test_backoff_then_cap_then_needs_attention_with_an_alert(dog):
    AlertChannel.objects.create(name="hook", url="http://127.0.0.1:9/none")
    samples(dog, 14, p95_ms=900.0)
    first = evaluate(dog.instance)
    assert isinstance(first, Operation) and first.trigger == "watchdog" and first.kind == "restart"
    assert first.options["rule"] == "p95_limit" and "p95 900 ms above 500 ms" in first.reason
    Operation.objects.filter(pk=first.pk).update(state="succeeded", finished=timezone.now() - timedelta(minutes=3))
    assert evaluate(dog.instance) is None  # within the backoff of 300 s
    Operation.objects.filter(pk=first.pk).update(created=timezone.now() - timedelta(minutes=6))
    second = evaluate(dog.instance)
    assert isinstance(second, Operation)
    Operation.objects.filter(pk=second.pk).update(
        state="succeeded",
        created=timezone.now() - timedelta(minutes=20),
        finished=timezone.now() - timedelta(minutes=3),
    )
    assert evaluate(dog.instance) == "alerted"  # the cap of 2 an hour: needs attention
    dog.refresh_from_db()
    assert dog.needs_attention_since is not None and "2 automatic actions" in dog.attention_reason
    assert evaluate(dog.instance) is None  # alerts once, then stays quiet
    assert Operation.objects.filter(trigger="watchdog").count() == 2
    assert list(AlertDelivery.objects.order_by("created").values_list("event", flat=True)) == [
        "watchdog",
        "watchdog",
        "needs_attention",
    ]


def test_alert_only_action(dog):
    dog.decay_action = "alert"
    dog.save()
    AlertChannel.objects.create(name="hook", url="http://127.0.0.1:9/none")
    samples(dog, 14, p95_ms=900.0)
    assert evaluate(dog.instance) == "alerted"
    assert evaluate(dog.instance) is None  # not again within the backoff
    assert not Operation.objects.exists() and AlertDelivery.objects.count() == 1


def test_sustain_shorter_than_a_few_sampling_intervals_still_fires(dog):
    # Samples 2 s apart and a 4 s sustain: the high run began with the second sample, 4 s before
    # the last. A window of 4 s holds two samples spanning 2 s; the run itself is what counts.
    dog.sustain_seconds = 4
    rows = samples(dog, 4, every=2, p95_ms=lambda i: 100.0 if i == 0 else 900.0)
    last = rows[-1].at
    assert [f.rule for f in findings(dog, rows, last - timedelta(seconds=0.5))] == []  # held 3.5 s
    assert [f.rule for f in findings(dog, rows, last + timedelta(seconds=0.5))] == ["p95_limit"]  # 4.5 s


def finished(instance, kind: str, state: str, seconds_ago: float) -> Operation:
    end = timezone.now() - timedelta(seconds=seconds_ago)
    return Operation.objects.create(
        instance=instance, kind=kind, state=state, created=end - timedelta(seconds=5), started=end, finished=end
    )


GONE = {"detail": "not running", "pids": []}


def test_a_server_that_dies_right_after_a_good_start_is_restarted_within_the_grace(dog):
    finished(dog.instance, "restart", "succeeded", 10)  # its ready step saw it ready; the grace is 60 s
    samples(dog, 3, every=1, probe_ok=False, status="down", data=GONE)
    operation = evaluate(dog.instance)
    assert isinstance(operation, Operation) and operation.options["rule"] == "liveness"


def test_a_server_still_starting_gets_its_grace_until_its_process_is_gone(dog):
    finished(dog.instance, "start", "failed", 10)  # not ready in time, but its process still loads
    samples(dog, 3, every=1, probe_ok=False, status="down", data={"detail": "no answer", "pids": [4242]})
    assert evaluate(dog.instance) is None
    Sample.objects.all().delete()
    samples(dog, 3, every=1, probe_ok=False, status="down", data=GONE)
    assert isinstance(evaluate(dog.instance), Operation)


def test_a_server_that_was_ready_once_gets_no_more_grace(dog):
    finished(dog.instance, "start", "failed", 20)
    samples(dog, 4, every=1, probe_ok=lambda i: i == 0, status=lambda i: "ready" if i == 0 else "down")
    assert isinstance(evaluate(dog.instance), Operation)


def test_an_instance_an_operator_stopped_stays_stopped(dog):
    finished(dog.instance, "stop", "succeeded", 600)
    samples(dog, 5, probe_ok=False, status="down", data=GONE)
    assert evaluate(dog.instance) is None and not Operation.objects.filter(trigger="watchdog").exists()


def test_an_instance_on_hold_is_left_alone_and_what_it_did_on_hold_is_forgotten(dog):
    from console.instances.models import Hold
    from console.operations.holds import place_hold

    now = timezone.now()

    def down(seconds_ago: float) -> None:
        Sample.objects.create(
            instance=dog.instance,
            at=now - timedelta(seconds=seconds_ago),
            status="down",
            probe_ok=False,
            p95_ms=900.0,
            data={"uptime": 3600},
        )

    AlertChannel.objects.create(name="hook", url="http://127.0.0.1:9/none")
    for seconds_ago in (50, 45, 40, 35):
        down(seconds_ago)
    place_hold(dog.instance, minutes=30, reason="driver upgrade")
    assert evaluate(dog.instance) is None  # down, but someone is working on it
    assert not Operation.objects.exists() and not AlertDelivery.objects.exists()
    # The hold ended 30 s ago: the failures seen while on hold were someone's work, not decay.
    Hold.objects.update(until=now - timedelta(seconds=30))
    assert evaluate(dog.instance) is None
    for seconds_ago in (20, 10, 0):  # down again since: liveness applies at once
        down(seconds_ago)
    acted = evaluate(dog.instance)
    assert isinstance(acted, Operation) and acted.options["rule"] == "liveness"


def restarted_for(dog, rule: str, p95_before: float, p95_after: float) -> Operation:
    """The watchdog's restart for `rule` 10 minutes ago, with the samples of the minutes around it."""
    started = timezone.now() - timedelta(minutes=10)
    finished_at = started + timedelta(seconds=20)
    operation = Operation.objects.create(
        instance=dog.instance,
        kind="restart",
        state="succeeded",
        trigger="watchdog",
        options={"rule": rule},
        created=started - timedelta(seconds=1),
        started=started,
        finished=finished_at,
    )
    for n in range(1, 10):
        Sample.objects.create(
            instance=dog.instance,
            at=started - timedelta(seconds=10 * n),
            status="ready",
            probe_ok=True,
            p95_ms=p95_before,
        )
    for n in range(10):
        Sample.objects.create(
            instance=dog.instance,
            at=finished_at + timedelta(seconds=30 + 10 * n),
            status="ready",
            probe_ok=True,
            p95_ms=p95_after,
        )
    return operation


def test_a_restart_for_latency_that_did_not_lower_it_is_not_repeated(dog):
    """Slow again, and its last restart for latency changed nothing: a restart does not fix this
    slowness (load, inputs, the GPU), so the watchdog asks for an operator instead of taking the
    server away from its users again."""
    AlertChannel.objects.create(name="hook", url="http://127.0.0.1:9/none")
    futile = restarted_for(dog, "p95_limit", p95_before=900.0, p95_after=880.0)
    samples(dog, 14, p95_ms=900.0)
    assert evaluate(dog.instance) == "alerted"
    dog.refresh_from_db()
    assert dog.needs_attention_since is not None
    assert dog.attention_reason == (
        f"its restart #{futile.pk} for latency did not lower it (p95 900 ms before, 880 ms after):"
        " not decay a restart fixes"
    )
    assert Operation.objects.filter(trigger="watchdog").count() == 1
    assert list(AlertDelivery.objects.values_list("event", flat=True)) == ["needs_attention"]
    assert evaluate(dog.instance) is None  # said once

    # An operator looked and cleared it: the watchdog may try again, the old restart not held against it.
    operator = Client()
    operator.force_login(user("op-dog", OPERATOR))
    assert operator.post("/instances/dog-a/watchdog/clear/").status_code == 302
    again = evaluate(dog.instance)
    assert isinstance(again, Operation) and again.options["rule"] == "p95_limit"


@pytest.mark.parametrize(
    "rule, p95_before, p95_after",
    [("p95_limit", 900.0, 150.0), ("close_wait", 900.0, 880.0)],
    ids=["it-helped-before", "it-was-for-something-else"],
)
def test_the_watchdog_acts_again_where_its_last_restart_helped_or_was_not_for_latency(dog, rule, p95_before, p95_after):
    restarted_for(dog, rule, p95_before, p95_after)
    samples(dog, 14, p95_ms=900.0)
    again = evaluate(dog.instance)
    assert isinstance(again, Operation) and again.options["rule"] == "p95_limit"
    dog.refresh_from_db()
    assert dog.needs_attention_since is None


def test_clearing_needs_attention_in_the_admin_is_remembered_too(dog):
    dog.needs_attention_since, dog.attention_reason = timezone.now(), "futile"
    dog.save()
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("root-dog", password="pw-for-tests-123"))
    url = f"/admin/watchdog/watchdog/{dog.pk}/change/"
    assert admin.get(url).status_code == 200
    form = {
        "instance": dog.instance.pk,
        "enabled": "on",
        "liveness_failures": 3,
        "startup_grace_seconds": 60,
        "p95_limit_ms": 500,
        "sustain_seconds": 60,
        "decay_action": "restart",
        "backoff_seconds": 300,
        "max_actions_per_hour": 2,
        "needs_attention_since_0": "",
        "needs_attention_since_1": "",
        "attention_reason": "",
    }
    assert admin.post(url, form).status_code == 302
    dog.refresh_from_db()
    assert dog.needs_attention_since is None and dog.cleared_at is not None
    cleared = dog.cleared_at
    form["p95_limit_ms"] = 600  # another change: not a clearing
    assert admin.post(url, form).status_code == 302
    dog.refresh_from_db()
    assert dog.cleared_at == cleared and dog.p95_limit_ms == 600
