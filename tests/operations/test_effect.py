"""What a restart changed: the runbook's figures before it against after it, from the samples, on the
operation's page and in the API. (With a real server slowed and restarted by the watchdog:
tests/schedules/test_healing.py.)"""

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console.api.models import ApiToken
from console.instances.roles import VIEWER
from console.operations.effect import effect, settle, with_latency_effects
from console.operations.models import Operation, Rollout
from console.schedules.models import RestartSchedule, ScheduleRun
from console.telemetry.models import Sample
from tests.factories import process_instance, user

GIB = 2**30


def decayed(instance, at, **figures):
    Sample.objects.create(instance=instance, at=at, status="degraded", probe_ok=True, **figures)


@pytest.fixture
def restarted(db):
    """A restart that ran 20 s, 10 minutes ago: slow and leaking before it, fresh after it; samples
    taken while it ran (a draining server's) count for neither side."""
    instance = process_instance("eff-a", command=["true"])
    started = timezone.now() - timedelta(minutes=10)
    finished = started + timedelta(seconds=20)
    operation = Operation.objects.create(
        instance=instance, kind="restart", state="succeeded", started=started, finished=finished
    )
    for n in range(1, 25):  # the 4 minutes before it, every 10 s
        decayed(
            instance,
            started - timedelta(seconds=10 * n),
            p95_ms=2000 + n,
            gpu_used=20 * GIB,
            fragmentation=0.35,
            close_wait=40 + n % 3,
            fds=900,
        )
    decayed(instance, started + timedelta(seconds=5), p95_ms=90_000, close_wait=500)  # while draining
    decayed(instance, finished + timedelta(seconds=10), p95_ms=9_000, gpu_used=30 * GIB)  # warming up
    for n in range(24):  # from 30 s after it ended, every 10 s
        decayed(
            instance,
            finished + timedelta(seconds=30 + 10 * n),
            p95_ms=400 + n,
            gpu_used=20 * GIB - 100 * 2**20,
            fragmentation=0.05,
            close_wait=0,
            fds=120,
        )
    return operation


def figures(measured: dict) -> dict:
    return {row["name"]: row for row in measured["figures"]}


@pytest.mark.django_db
def test_the_figures_before_against_after_their_medians_and_verdicts(restarted):
    measured = effect(restarted)
    assert measured["measuring"] is False
    assert measured["before"]["samples"] == 24 and measured["after"]["samples"] == 24
    rows = figures(measured)
    assert rows["p95_ms"]["before"] == 2012.5 and rows["p95_ms"]["after"] == 411.5
    assert rows["p95_ms"]["change"] == "lower" and rows["close_wait"]["change"] == "lower"
    assert rows["fragmentation"]["change"] == "lower" and rows["fds"]["change"] == "lower"
    # 100 MiB less of 20 GiB: under a tenth, not an effect.
    assert rows["gpu_used"]["change"] == "same" and rows["gpu_used"]["after"] == 20 * GIB - 100 * 2**20
    assert "ttft_ms" not in rows and "rss" not in rows  # never sampled


@pytest.mark.django_db
def test_measuring_until_the_window_after_has_passed_with_the_figures_so_far(restarted):
    now = restarted.finished + timedelta(seconds=95)  # 30 s settling, then 65 s of the 300
    measured = effect(restarted, now=now)
    assert measured["measuring"] is True and measured["after"]["samples"] == 7
    assert figures(measured)["p95_ms"]["after"] == 403


@pytest.mark.django_db
def test_latency_as_high_after_a_restart_is_said_and_older_operations_read_the_rollups(restarted):
    instance = restarted.instance
    Sample.objects.filter(instance=instance, at__gt=restarted.finished).update(p95_ms=2100)
    assert figures(effect(restarted))["p95_ms"]["change"] == "same"
    Sample.objects.filter(instance=instance, at__gt=restarted.finished).update(p95_ms=3000)
    assert figures(effect(restarted))["p95_ms"]["change"] == "higher"

    # Raw samples pruned after a day: the per-minute rollups stand in.
    Sample.objects.filter(instance=instance).update(resolution=Sample.MINUTE)
    assert figures(effect(restarted))["p95_ms"]["after"] == 3000


@pytest.mark.django_db
def test_only_a_restart_or_soft_reset_that_succeeded_has_an_effect(restarted):
    for kind, state in (("stop", "succeeded"), ("start", "succeeded"), ("restart", "failed"), ("restart", "running")):
        Operation.objects.filter(pk=restarted.pk).update(kind=kind, state=state)
        restarted.refresh_from_db()
        assert effect(restarted) is None, (kind, state)
    Operation.objects.filter(pk=restarted.pk).update(kind="soft_reset", state="succeeded")
    restarted.refresh_from_db()
    assert figures(effect(restarted))["p95_ms"]["change"] == "lower"

    quiet = Operation.objects.create(
        instance=process_instance("eff-quiet", command=["true"]),
        kind="restart",
        state="succeeded",
        started=timezone.now() - timedelta(hours=1),
        finished=timezone.now() - timedelta(minutes=59),
    )
    assert effect(quiet)["figures"] == []


@pytest.mark.django_db
def test_the_page_and_the_api_show_the_effect(restarted):
    viewer = user("v-eff", VIEWER)
    browser = Client()
    browser.force_login(viewer)
    page = browser.get(f"/operations/{restarted.pk}/").content.decode()
    row = page.split('data-figure="p95_ms"')[1].split("</tr>")[0]
    assert 'data-change="lower"' in row and "2012 ms" in row and "412 ms" in row and "p95 latency" in row
    assert "20.00 GiB" in page and "35 %" in page and "measuring" not in page
    card = browser.get(f"/operations/{restarted.pk}/effect/", HTTP_HX_REQUEST="true")
    assert card.status_code == 200 and b'data-figure="close_wait"' in card.content
    # The instance's page, where the restart was asked for, shows it too once the restart has ended.
    latest = browser.get("/instances/eff-a/operations/latest/", HTTP_HX_REQUEST="true").content.decode()
    assert f'id="operation-{restarted.pk}"' in latest and 'data-figure="p95_ms" data-change="lower"' in latest

    _, key = ApiToken.issue(viewer, "script")
    body = Client().get(f"/api/operations/{restarted.pk}/", HTTP_AUTHORIZATION=f"Bearer {key}").json()
    assert body["effect"]["measuring"] is False
    assert {row["name"]: row["change"] for row in body["effect"]["figures"]}["close_wait"] == "lower"

    running = Operation.objects.create(instance=restarted.instance, kind="restart", state="running")
    waiting = browser.get(f"/operations/{running.pk}/").content.decode()
    assert 'id="effect"' in waiting and "operation-updated from:body" in waiting  # fetched once it ends


@pytest.mark.django_db
def test_the_instance_pages_operations_say_whether_each_restart_lowered_latency(restarted):
    older = Operation.objects.create(
        instance=restarted.instance,
        kind="restart",
        state="succeeded",
        started=restarted.started - timedelta(hours=3),
        finished=restarted.started - timedelta(hours=3) + timedelta(seconds=20),
    )
    decayed(restarted.instance, older.started - timedelta(seconds=30), p95_ms=700)
    decayed(restarted.instance, older.finished + timedelta(seconds=60), p95_ms=690)
    stopped = Operation.objects.create(instance=restarted.instance, kind="stop", state="succeeded")
    browser = Client()
    browser.force_login(user("v-rows", VIEWER))
    with CaptureQueriesContext(connection) as queries:
        rows = browser.get("/instances/eff-a/operations/rows/", HTTP_HX_REQUEST="true").content.decode()
    assert sum("telemetry_sample" in query["sql"] for query in queries.captured_queries) == 1  # one read for all
    cells = {
        number: rows.split(f">{number}</a>")[1].split('class="effect"')[1].split("</td>")[0]
        for number in (restarted.pk, older.pk, stopped.pk)
    }
    assert 'data-change="lower"' in cells[restarted.pk] and "2012 ms → 412 ms" in cells[restarted.pk]
    assert 'data-change="same"' in cells[older.pk] and "700 ms → 690 ms" in cells[older.pk]
    assert cells[stopped.pk].strip() == 'data-change="">'
    page = browser.get("/instances/eff-a/").content.decode()
    assert "p95 before → after" in page and "2012 ms → 412 ms" in page


@pytest.mark.django_db
def test_a_rollouts_page_says_on_how_many_instances_the_restart_lowered_latency(restarted):
    stopped = Operation.objects.create(instance=restarted.instance, kind="stop", state="succeeded")
    results = [
        {"instance": "eff-a", "state": "succeeded", "operation": restarted.pk, "detail": ""},
        {"instance": "eff-a", "state": "succeeded", "operation": stopped.pk, "detail": ""},
        {"instance": "eff-b", "state": "skipped", "operation": None, "detail": "on hold"},
    ]
    rollout = Rollout.objects.create(instance_names=["eff-a", "eff-b"], strategy="rolling", results=results)
    browser = Client()
    browser.force_login(user("v-roll", VIEWER))
    running = browser.get(f"/rollouts/{rollout.pk}/").content.decode()
    assert "p95 2012 ms" not in running and 'id="rollout-effect"' not in running  # judged once it has ended
    Rollout.objects.filter(pk=rollout.pk).update(state="succeeded")
    page = browser.get(f"/rollouts/{rollout.pk}/").content.decode()
    assert page.count('class="effect"') == 1 and "· p95 2012 ms → 412 ms" in page
    assert "p95 latency lower after the restart on 1 of 1 instance</p>" in page

    # The schedule whose run it was says so beside its last run: is the nightly restart doing anything?
    nightly = RestartSchedule.objects.create(name="nightly", cron="0 3 * * *", group="g")
    now = timezone.now()
    ScheduleRun.objects.create(schedule=nightly, planned_for=now, fired_at=now, state="started", rollout=rollout)
    listed = browser.get("/schedules/").content.decode()
    assert 'data-lowered="1" data-judged="1"' in listed and "p95 lower on 1 of 1 instance" in listed


@pytest.mark.django_db
def test_the_p95_effect_is_kept_once_measured_and_outlives_its_samples(restarted):
    """Beat's minute round keeps p95 before and after on the operation once its window after has passed:
    lists, Prometheus and the watchdog read those, even after the samples are pruned."""
    instance = restarted.instance
    assert settle(now=restarted.finished + timedelta(seconds=320)) == 0  # 10 s of the window still to come
    other = process_instance("eff-other", command=["true"])
    soft = Operation.objects.create(
        instance=other, kind="soft_reset", state="succeeded", started=restarted.started, finished=restarted.finished
    )
    stopped = Operation.objects.create(
        instance=instance, kind="stop", state="succeeded", started=restarted.started, finished=restarted.finished
    )
    with CaptureQueriesContext(connection) as queries:
        assert settle() == 2
    assert sum("telemetry_sample" in query["sql"] for query in queries.captured_queries) == 2  # one per instance
    restarted.refresh_from_db()
    assert (restarted.p95_before_ms, restarted.p95_after_ms, restarted.p95_change) == (2012.5, 411.5, "lower")
    soft.refresh_from_db()
    assert soft.effect_settled is not None and soft.p95_before_ms is None and soft.p95_change == ""  # no samples
    stopped.refresh_from_db()
    assert stopped.effect_settled is None  # a stop has no effect to keep
    assert settle() == 0  # kept once

    # A console just upgraded with a long history: the newest first, the rest in later rounds.
    history = [
        Operation.objects.create(
            instance=other,
            kind="restart",
            state="succeeded",
            started=restarted.started - timedelta(days=d),
            finished=restarted.finished - timedelta(days=d),
        )
        for d in (3, 1, 2)
    ]
    settled = Operation.objects.filter(pk__in=[h.pk for h in history]).exclude(effect_settled=None)
    assert settle(batch=2) == 2 and set(settled.values_list("pk", flat=True)) == {history[1].pk, history[2].pk}
    assert settle(batch=2) == 1 and settled.count() == 3

    # Raw samples would read as per-minute rollups after a day, and none are left after a month.
    Sample.objects.filter(instance=instance).delete()
    assert with_latency_effects(instance, [restarted])[0].latency_effect == {
        "before": 2012.5,
        "after": 411.5,
        "change": "lower",
    }
    assert figures(effect(restarted)) == {
        "p95_ms": {"name": "p95_ms", "unit": "ms", "before": 2012.5, "after": 411.5, "change": "lower"}
    }
    browser = Client()
    browser.force_login(user("v-kept", VIEWER))
    rows = browser.get("/instances/eff-a/operations/rows/", HTTP_HX_REQUEST="true").content.decode()
    assert "2012 ms → 412 ms" in rows
    # Scripts read it beside each of an instance's recent operations.
    _, key = ApiToken.issue(user("v-kept-api", VIEWER), "script")
    listed = Client().get("/api/instances/eff-a/", HTTP_AUTHORIZATION=f"Bearer {key}").json()["operations"]
    by_id = {operation["id"]: operation["latency_effect"] for operation in listed}
    assert by_id[restarted.pk] == {"before": 2012.5, "after": 411.5, "change": "lower"}
    assert by_id[stopped.pk] is None
