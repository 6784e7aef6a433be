"""The morning's report on a schedule's run: sent once its restarts' effect is measured, to the channels
that want one, with what restarted, was skipped and why, or failed, and what p95 did."""

from datetime import timedelta

import pytest
from django.utils import timezone

from console.alerts.models import AlertChannel, AlertDelivery
from console.alerts.notify import attempt
from console.operations.effect import settle
from console.operations.models import Operation, Rollout
from console.schedules.models import RestartSchedule, ScheduleRun
from console.schedules.report import send_reports
from console.telemetry.models import Sample
from tests.conftest import WebhookReceiver
from tests.factories import process_instance


def restart(instance, ended, state="succeeded", **kept) -> Operation:
    return Operation.objects.create(
        instance=instance,
        kind="restart",
        trigger="schedule",
        state=state,
        started=ended - timedelta(seconds=20),
        finished=ended,
        **kept,
    )


def run_of(schedule, results, ended, trigger="schedule") -> Rollout:
    rollout = Rollout.objects.create(
        instance_names=[r["instance"] for r in results],
        trigger=trigger,
        state="succeeded",
        results=results,
        created=ended - timedelta(minutes=2),
        finished=ended,
    )
    if schedule is not None:
        ScheduleRun.objects.create(
            schedule=schedule, planned_for=rollout.created, fired_at=rollout.created, state="started", rollout=rollout
        )
    return rollout


@pytest.mark.django_db
def test_a_measured_run_is_reported_once_to_the_channels_that_want_it():
    a, b, c = (process_instance(name, command=["true"]) for name in ("rep-a", "rep-b", "rep-c"))
    elsewhere = process_instance("rep-z", command=["true"])
    now = timezone.now()
    ended = now - timedelta(minutes=10)
    nightly = RestartSchedule.objects.create(name="nightly", cron="0 3 * * *", group="g")
    kept = dict(p95_before_ms=900.0, p95_after_ms=300.0, p95_change="lower", effect_settled=now)
    lowered, failed = restart(a, ended, **kept), restart(c, ended, state="failed")
    results = [
        {"instance": "rep-a", "operation": lowered.pk, "state": "succeeded", "detail": ""},
        {"instance": "rep-b", "operation": None, "state": "skipped", "detail": "on hold by alice: driver upgrade"},
        {"instance": "rep-c", "operation": failed.pk, "state": "failed", "detail": "ready: timed out after 60 s"},
    ]
    run = run_of(nightly, results, ended)
    receiver = WebhookReceiver()
    try:
        AlertChannel.objects.create(name="reports", url=receiver.url, on_schedule_report=True)
        AlertChannel.objects.create(name="not-asked", url=receiver.url)  # alerts only, the default
        AlertChannel.objects.create(name="only-c", url=receiver.url, on_schedule_report=True).instances.add(c)
        AlertChannel.objects.create(name="only-z", url=receiver.url, on_schedule_report=True).instances.add(elsewhere)
        # Runs never reported: a manual rollout, and one that ended two days ago (a console just upgraded).
        run_of(None, results, ended, trigger="manual")
        run_of(nightly, results, now - timedelta(days=2))

        assert send_reports(now) == 1
        deliveries = AlertDelivery.objects.order_by("channel__name")
        assert [d.channel.name for d in deliveries] == ["only-c", "reports"]
        delivery = deliveries[1]
        assert delivery.event == "schedule_report" and delivery.instance_name == ""
        assert delivery.title == "schedule 'nightly': 1 restarted, 1 skipped, 1 failed; p95 lower on 1 of 1"
        assert "- rep-a: succeeded; p95 900 ms → 300 ms (lower)" in delivery.text
        assert "- rep-b: skipped (on hold by alice: driver upgrade)" in delivery.text
        assert "- rep-c: failed (ready: timed out after 60 s)" in delivery.text
        assert delivery.details["rollout"] == run.pk and delivery.details["p95_lowered"] == 1
        assert attempt(delivery) and receiver.received[0]["event"] == "schedule_report"
        assert receiver.received[0]["text"].startswith("[Instance Console] schedule 'nightly': 1 restarted")
        assert send_reports(now + timedelta(minutes=1)) == 0  # once
    finally:
        receiver.close()


@pytest.mark.django_db
def test_a_run_waits_for_its_restarts_effect_to_be_measured():
    instance = process_instance("rep-wait", command=["true"])
    nightly = RestartSchedule.objects.create(name="nightly-wait", cron="0 3 * * *", group="g")
    AlertChannel.objects.create(name="reports", url="http://127.0.0.1:9/x", on_schedule_report=True)
    ended = timezone.now() - timedelta(minutes=2)
    restarted = restart(instance, ended)
    for minutes in (3, 4):  # slow before it; fast after it once settled
        Sample.objects.create(
            instance=instance, at=restarted.started - timedelta(minutes=minutes), status="ready", p95_ms=800.0
        )
    Sample.objects.create(instance=instance, at=ended + timedelta(minutes=1), status="ready", p95_ms=200.0)
    run_of(nightly, [{"instance": "rep-wait", "operation": restarted.pk, "state": "succeeded", "detail": ""}], ended)
    assert send_reports() == 0  # its window after has not passed: the report would say nothing of p95
    later = ended + timedelta(minutes=6)
    assert settle(now=later) == 1 and send_reports(later) == 1
    report = AlertDelivery.objects.get()
    assert report.title.endswith("p95 lower on 1 of 1") and "p95 800 ms → 200 ms (lower)" in report.text
