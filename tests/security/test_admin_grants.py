"""An admin who is not a superuser cannot make anyone a superuser, grant raw permissions, or take
over a superuser's account through the admin."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django_celery_beat.models import PeriodicTask

from console.audit.models import AuditEntry
from console.instances.roles import OPERATOR
from console.schedules.models import RestartSchedule
from tests.factories import user


@pytest.fixture
def admin_client(db):
    account = user("site-admin", role="admin")
    account.is_staff = True
    account.save()
    client = Client()
    client.force_login(account)
    return client


def change_form(client, target) -> dict:
    page = client.get(f"/admin/auth/user/{target.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    return {k: v for k, v in data.items() if v is not None}


def test_a_non_superuser_admin_cannot_grant_superuser_or_raw_permissions(admin_client):
    target = user("someone", role="viewer")
    data = change_form(admin_client, target)
    assert "is_superuser" not in data and "user_permissions" not in data  # read-only for this admin
    data.update(
        is_superuser="on",
        user_permissions=[Permission.objects.get(codename="delete_instance").pk],
        date_joined_0="2026-01-01",
        date_joined_1="00:00:00",
    )
    admin_client.post(f"/admin/auth/user/{target.pk}/change/", data)
    target.refresh_from_db()
    assert not target.is_superuser and not target.user_permissions.exists()
    assert AuditEntry.objects.filter(action="admin.changed", actor="site-admin", target__contains="someone").exists()


def test_a_superuser_s_account_is_out_of_reach(admin_client):
    root = get_user_model().objects.create_superuser("root", password="root-pass-123")
    assert admin_client.get(f"/admin/auth/user/{root.pk}/change/").status_code in (302, 403, 404)
    assert admin_client.post(
        f"/admin/auth/user/{root.pk}/password/", {"password1": "x", "password2": "x"}
    ).status_code in (302, 403, 404)
    assert admin_client.post(f"/admin/auth/user/{root.pk}/delete/", {"post": "yes"}).status_code in (302, 403, 404)
    root.refresh_from_db()
    assert root.check_password("root-pass-123")


@pytest.mark.parametrize("who", ["operator", "superuser"])
def test_beat_s_entries_are_seen_in_the_admin_and_never_written_there(db, who):
    """A staff operator could once add beat entries through the admin: any task of the console's, any
    arguments, any host's queue, outside its permissions and audit; and anyone who edited a restart
    schedule's entry there parted it from its page."""
    if who == "superuser":
        account = get_user_model().objects.create_superuser("root", password="root-pass-123")
    else:
        account = user("op", role=OPERATOR)
        account.is_staff = True
        account.save()
    client = Client()
    client.force_login(account)
    schedule = RestartSchedule.objects.create(name="nightly", cron="0 3 * * *", timezone="UTC")
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    crontab = task.crontab

    assert client.get("/admin/django_celery_beat/periodictask/").status_code == 200
    page = client.get(f"/admin/django_celery_beat/periodictask/{task.pk}/change/")
    assert page.status_code == 200 and "restart-schedule-" in page.content.decode()
    assert client.get(f"/admin/django_celery_beat/crontabschedule/{crontab.pk}/change/").status_code in (200, 403)

    forged = {"name": "sneaky", "regtask": "console.schedules.tasks.run_schedule", "enabled": "on"}
    forged.update(interval="", crontab=crontab.pk, args=f"[{schedule.pk}]", kwargs="{}", headers="{}", _save="Save")
    assert client.post("/admin/django_celery_beat/periodictask/add/", forged).status_code == 403
    assert client.post(f"/admin/django_celery_beat/periodictask/{task.pk}/change/", forged).status_code == 403
    assert client.post(f"/admin/django_celery_beat/periodictask/{task.pk}/delete/", {"post": "yes"}).status_code == 403
    changed = {"name": "x", "minute": "0", "hour": "4", "day_of_month": "*", "month_of_year": "*", "day_of_week": "*"}
    assert client.post(f"/admin/django_celery_beat/crontabschedule/{crontab.pk}/change/", changed).status_code == 403
    for action in ("disable_tasks", "run_tasks", "delete_selected"):
        client.post(
            "/admin/django_celery_beat/periodictask/",
            {"action": action, "_selected_action": [task.pk], "index": "0"},
        )

    task.refresh_from_db()
    crontab.refresh_from_db()
    assert task.enabled and task.name == f"restart-schedule-{schedule.pk}" and crontab.hour == "3"
    assert not PeriodicTask.objects.filter(name="sneaky").exists()
