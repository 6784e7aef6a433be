"""Forged input to the admin is refused with a message, never a 500, and changes nothing: an
action's selection that is not a key, and a choice of rows by a key no row can hold."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from console.instances.models import Instance
from console.instances.roles import VIEWER
from console.schedules.models import RestartSchedule
from tests.factories import process_instance


@pytest.fixture
def superuser_client(db):
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", password="root-pass-123"))
    return client


@pytest.mark.parametrize("path", ["/admin/instances/instance/", "/admin/django_celery_beat/periodictask/"])
def test_an_action_on_a_selection_that_is_not_a_key_is_a_400(superuser_client, path):
    kept = process_instance("kept", command=["true"])
    page = superuser_client.post(path, {"action": "delete_selected", "_selected_action": [kept.pk, "<b>1 or 1=1"]})
    assert page.status_code == 400 and "'<b>1 or 1=1' is not the key of any" in page.content.decode()
    assert page["Content-Type"].startswith("text/plain")  # the forged value is never markup
    assert Instance.objects.filter(pk=kept.pk).exists()


def test_an_action_on_a_key_no_row_can_hold_selects_nothing(superuser_client):
    kept = process_instance("kept", command=["true"])
    page = superuser_client.post(
        "/admin/instances/instance/",
        {"action": "delete_selected", "_selected_action": ["99999999999999999999"], "post": "yes"},
    )
    assert page.status_code in (200, 302)
    assert Instance.objects.filter(pk=kept.pk).exists()


def test_a_choice_by_a_key_no_row_can_hold_is_a_form_error(superuser_client):
    page = superuser_client.post(
        "/admin/schedules/restartschedule/add/",
        {"name": "n", "cron": "0 3 * * *", "timezone": "UTC", "instances": ["99999999999999999999"]},
    )
    assert page.status_code == 200 and "is not one of the available choices" in page.content.decode()
    assert not RestartSchedule.objects.exists()


@pytest.mark.django_db
def test_in_over_a_key_drops_the_values_no_row_can_hold():
    """Every backend: the value is never sent (SQLite could not bind it), and the rest still match."""
    row = process_instance("row", command=["true"])
    query = Instance.objects.filter(pk__in=[10**20, row.pk, -(10**20)])
    assert str(10**20) not in str(query.query)
    assert list(query) == [row]
    assert not Instance.objects.filter(pk__in=[10**20]).exists()


def instance_form(client, instance) -> dict:
    """What the instance's change page would post back, its JSON fields as the page writes them."""
    form = client.get(f"/admin/instances/instance/{instance.pk}/change/").context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    data = {name: value for name, value in data.items() if value is not None and value is not False}
    return {**data, "host": instance.host_id, "command": '["true"]', "env": "{}", "run_spec": "{}", "gpu_indices": "[]"}


def test_json_nested_past_the_parser_s_limit_is_a_form_error(superuser_client):
    """An instance's command, environment, run spec or GPUs, and the hidden initial beside them."""
    instance = process_instance("deep", command=["true"], gpu_indices=[0])
    data = {**instance_form(superuser_client, instance), "gpu_indices": "[0]"}
    deep = "[" * 100_000 + "]" * 100_000
    for field in ("command", "gpu_indices"):
        for name in (field, f"initial-{field}"):
            page = superuser_client.post(f"/admin/instances/instance/{instance.pk}/change/", {**data, name: deep})
            assert page.status_code in (200, 302), (name, page.status_code)
            if name == field:
                assert "nested too deeply" in page.content.decode()
    instance.refresh_from_db()
    assert instance.command == ["true"] and instance.gpu_indices == [0]


@pytest.mark.parametrize("value", ["", "null", "NaN", "1e309", '{"shm_size": -Infinity}'])
def test_a_process_instance_s_run_spec_that_is_not_a_json_object_is_a_form_error(superuser_client, value):
    """Not JSON (NaN, Infinity: Python's parser takes them, neither database stores them), or not an
    object (the column holds one): a form error, where the save was an IntegrityError."""
    instance = process_instance("spec", command=["true"])
    data = {**instance_form(superuser_client, instance), "run_spec": value}
    page = superuser_client.post(f"/admin/instances/instance/{instance.pk}/change/", data)
    assert page.status_code == 200 and page.context["adminform"].form.errors["run_spec"]
    instance.refresh_from_db()
    assert instance.run_spec == {}


def test_the_server_admin_token_is_write_only(superuser_client):
    """Never sent back to a browser, to an admin or to one who may only look; kept when left blank,
    replaced when typed, removed only when asked. One who may only look sees no value of the
    environment either."""
    instance = process_instance("secret", command=["true"], admin_token="s3cret-token-abc")
    change = f"/admin/instances/instance/{instance.pk}/change/"
    page = superuser_client.get(change).content.decode()
    assert "s3cret-token-abc" not in page and "set (not shown)" in page

    def saved(**fields) -> str:
        data = {**instance_form(superuser_client, instance), "admin_token": "", **fields}
        assert superuser_client.post(change, data).status_code == 302
        instance.refresh_from_db()
        return instance.admin_token

    assert saved() == "s3cret-token-abc"
    assert saved(admin_token="n3w-token") == "n3w-token"
    assert saved(clear_admin_token="on") == ""

    instance.admin_token = "s3cret-token-abc"
    instance.env = {"HF_TOKEN": "hf-s3cret"}
    instance.run_spec = {"environment": {"API_KEY": "k-s3cret"}, "shm_size": "8g"}
    instance.save()
    looker = get_user_model().objects.create_user("looker", password="looker-pass-123", is_staff=True)
    looker.groups.add(Group.objects.get(name=VIEWER))
    client = Client()
    client.force_login(looker)
    page = client.get(change)
    assert page.status_code == 200 and "s3cret-token-abc" not in page.content.decode()
    assert "set (not shown)" in page.content.decode() and "Remove the admin token" not in page.content.decode()
    # ... and the environment's names, not its values (where secrets go).
    assert "HF_TOKEN=…" in page.content.decode() and "API_KEY" in page.content.decode()
    assert "s3cret" not in page.content.decode() and "8g" in page.content.decode()
    assert "hf-s3cret" in superuser_client.get(change).content.decode()  # one who may change it sees it
