"""Schedule pages: an operator sets a nightly rolling restart; bad input is a form error."""

import pytest
from django_celery_beat.models import PeriodicTask

from console.schedules.models import RestartSchedule
from tests.factories import process_instance, user


@pytest.fixture
def operator(client, db):
    user("op-sched", role="operator")
    client.login(username="op-sched", password="pw-for-tests-123")
    process_instance("gpu-a-1", command=["true"], group="gpu-a")
    return client


def form(**overrides):
    data = {
        "name": "nightly",
        "cron": "daily at 03:00",
        "timezone": "Asia/Shanghai",
        "group": "gpu-a",
        "strategy": "rolling",
        "busy_policy": "wait",
        "grace_minutes": "30",
        "enabled": "on",
    }
    data.update(overrides)
    return data


def test_operator_creates_a_schedule_that_beat_will_fire(operator):
    response = operator.post("/schedules/new/", form())
    assert response.status_code == 302
    schedule = RestartSchedule.objects.get()
    assert schedule.cron == "0 3 * * *"
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert task.task == "console.schedules.tasks.run_schedule" and task.args == f"[{schedule.pk}]" and task.enabled
    assert (task.crontab.minute, task.crontab.hour, str(task.crontab.timezone)) == ("0", "3", "Asia/Shanghai")
    page = operator.get("/schedules/").content.decode()
    assert "03:00 CST" in page and "(19:00 UTC)" in page
    edit = operator.get(f"/schedules/{schedule.pk}/").content.decode()
    assert edit.count("= ") >= 5 and "19:00 UTC" in edit  # the next five runs, local and UTC


def test_a_schedule_and_a_group_restart_can_reload_the_weights(operator):
    """The schedule's checkbox is kept and shown in the list; the page's group restart asks it too."""
    from console.operations.models import Rollout

    assert "reload weights" not in operator.get("/schedules/").content.decode()
    operator.post("/schedules/new/", form(reload_weights="on"))
    assert RestartSchedule.objects.get().reload_weights
    assert "reloads weights" in operator.get("/schedules/").content.decode()
    rollout_page = operator.post("/rollouts/", {"group": "gpu-a", "strategy": "all", "reload_weights": "on"})
    assert rollout_page.status_code == 302 and Rollout.objects.get().reload_weights
    assert "reloads weights" in operator.get(rollout_page.url).content.decode()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cron": "0 3 * *"}, "five cron fields"),
        ({"cron": "0 99 * * *"}, "hour field"),
        ({"timezone": "Asia/Atlantis"}, "Unknown time zone"),
        ({"group": ""}, "Choose a group or at least one instance"),
        ({"window_start": "01:00"}, "both ends of the maintenance window"),
        # A forged instance key beyond 64 bits: SQLite could not bind it (a 500); none is a choice.
        ({"instances": "99999999999999999999"}, "is not one of the available choices"),
        ({"instances": "-99999999999999999999"}, "is not one of the available choices"),
    ],
)
def test_bad_input_is_a_form_error_and_nothing_is_saved(operator, overrides, message):
    response = operator.post("/schedules/new/", form(**overrides))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not RestartSchedule.objects.exists() and not PeriodicTask.objects.filter(name__startswith="restart").exists()


def test_pause_resume_and_delete_follow_through_to_beat(operator):
    operator.post("/schedules/new/", form())
    schedule = RestartSchedule.objects.get()
    operator.post(f"/schedules/{schedule.pk}/toggle/")
    assert not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    operator.post(f"/schedules/{schedule.pk}/toggle/")
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    operator.post(f"/schedules/{schedule.pk}/delete/")
    assert not RestartSchedule.objects.exists() and not PeriodicTask.objects.filter(name__startswith="restart").exists()


def test_preview_shows_errors_while_typing(operator):
    bad = operator.get("/schedules/preview/", {"cron": "0 3 * * 9", "timezone": "UTC"})
    assert bad.status_code == 400 and "day of week" in bad.content.decode()
    good = operator.get("/schedules/preview/", {"cron": "30 2 * * *", "timezone": "America/New_York"})
    assert good.status_code == 200 and good.content.decode().count("<li>") == 5


def test_viewers_see_schedules_but_cannot_change_them(client, db):
    user("viewer-sched", role="viewer")
    client.login(username="viewer-sched", password="pw-for-tests-123")
    assert client.get("/schedules/").status_code == 200
    assert client.post("/schedules/new/", form()).status_code == 403


def test_the_fall_back_day_shows_which_of_the_two_times_runs():
    from datetime import UTC, datetime

    from django.template.loader import render_to_string

    from console.schedules.forms import next_runs

    runs = next_runs("30 1 * * *", "America/New_York", 3, after=datetime(2026, 10, 31, 12, tzinfo=UTC))
    page = render_to_string("schedules/_preview.html", {"preview": runs})
    assert "Sun 2026-11-01 01:30 EDT" in page and "= 2026-11-01 05:30 UTC" in page
    assert page.count("happens twice") == 1  # that day only
    assert "Mon 2026-11-02 01:30 EST" in page and "= 2026-11-02 06:30 UTC" in page


def test_the_schedule_form_speaks_the_reader_s_language(operator):
    """Its labels, help, choices and errors: written on the model in English (the admin's), said on the
    page in the reader's language."""
    page = operator.get("/schedules/new/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    for said in ("时区", "分组", "繁忙实例", "排空后重启(等待进行中的请求完成)", "仅重启需要的实例", "维护窗口结束"):
        assert said in page, said
    for english in ("Time zone", "Busy instances", "Drain and restart", "Window end", ">Group<"):
        assert english not in page, english
    refused = operator.post("/schedules/new/", form(group="", window_end="04:00"), HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert "请选择一个分组或至少一个要重启的实例。" in refused.content.decode()
    assert "请同时填写维护窗口的开始和结束时间,或都不填。" in refused.content.decode()
    assert "Time zone" in operator.get("/schedules/new/", HTTP_ACCEPT_LANGUAGE="en").content.decode()


def test_a_rollout_s_entries_say_their_state_in_the_reader_s_language(operator):
    from console.operations.models import Rollout

    rollout = Rollout.objects.create(
        instance_names=["gpu-a-1", "gone"],
        state="succeeded",
        results=[
            {"instance": "gpu-a-1", "operation": None, "state": "skipped", "detail": "healthy by its checklist"},
            {"instance": "gone", "operation": None, "state": "not started", "detail": ""},
        ],
    )
    page = operator.get(f"/rollouts/{rollout.pk}/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert (
        '<span class="badge skipped">已跳过</span>' in page and '<span class="badge not started">未启动</span>' in page
    )
    assert '<span class="badge skipped">Skipped</span>' in operator.get(f"/rollouts/{rollout.pk}/").content.decode()


def test_what_is_wrong_with_an_expression_is_said_in_the_reader_s_language(operator):
    wrong = operator.get(
        "/schedules/preview/", {"cron": "0 3 * * 9", "timezone": "UTC"}, HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    assert wrong.status_code == 400 and "星期 字段 &#x27;9&#x27;" in wrong.content.decode()
    short = operator.get("/schedules/preview/", {"cron": "0 3", "timezone": "UTC"}, HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert "收到 2 个字段" in short.content.decode()
    zone = operator.get(
        "/schedules/preview/", {"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    assert "未知时区 &#x27;Mars/Olympus&#x27;" in zone.content.decode()
    english = operator.get("/schedules/preview/", {"cron": "0 3 * * 9", "timezone": "UTC"}).content.decode()
    assert "The day of week field &#x27;9&#x27;" in english
