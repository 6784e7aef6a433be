"""An instance on hold: placed and ended with their checks and audit, from the page, the API and the
shell; rollouts (and so schedules) skip it while it holds. Every instance of a host held at once, for
work on the machine itself, the same three ways."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from console.api.models import ApiToken
from console.audit.models import AuditEntry
from console.instances.holds import active_hold
from console.instances.models import Hold, Instance
from console.instances.roles import OPERATOR, VIEWER
from console.operations.holds import HoldRefused, end_hold, place_hold, place_holds
from console.operations.models import Operation, Rollout
from console.operations.rollout import advance
from tests.factories import host, process_instance, user


@pytest.fixture
def instance(db):
    return process_instance("hold-a", command=["true"])


def signed_in(name: str) -> tuple[Client, Client]:
    """An operator's browser and a viewer's."""
    operator, viewer = Client(), Client()
    operator.force_login(user(f"op-{name}", OPERATOR))
    viewer.force_login(user(f"v-{name}", VIEWER))
    return operator, viewer


@pytest.mark.django_db
def test_a_hold_is_checked_placed_replaced_and_ended_with_its_audit(instance):
    operator = user("op-hold", OPERATOR)
    for minutes, reason, refusal in (
        (0, "x", "a whole number from 1 to 10080"),
        (10081, "x", "a whole number from 1 to 10080"),
        (True, "x", "a whole number"),
        ("30", "x", "a whole number"),
        (None, "x", "a whole number"),
        (30, "  ", "Say why"),
        (30, "x" * 301, "at most 300 characters"),
        (30, ["x"], "Say why"),
    ):
        with pytest.raises(HoldRefused, match=refusal):
            place_hold(instance, minutes=minutes, reason=reason, user=operator)
    assert not Hold.objects.exists() and not AuditEntry.objects.filter(action="instance.held").exists()

    before = timezone.now()
    hold = place_hold(instance, minutes=30, reason=" driver upgrade ", user=operator)
    assert hold.reason == "driver upgrade" and hold.placed_by == "op-hold"
    assert timedelta(minutes=30) <= hold.until - before < timedelta(minutes=31)
    assert active_hold(instance) == hold
    longer = place_hold(instance, minutes=240, reason="driver upgrade, then a reboot", user=operator)
    assert Hold.objects.count() == 1 and active_hold(instance).until == longer.until
    assert longer.until - hold.until > timedelta(minutes=200)

    ended = end_hold(instance, user=operator)
    assert ended is not None and active_hold(instance) is None and ended.until <= timezone.now()
    assert end_hold(instance, user=operator) is None  # nothing left to end
    entries = list(AuditEntry.objects.filter(target="instance hold-a").order_by("at").values_list("action", "outcome"))
    assert [action for action, _ in entries] == ["instance.held", "instance.held", "instance.hold_ended"]
    assert entries[0][1].startswith("on hold until ") and entries[0][1].endswith("(30 min)")


@pytest.mark.django_db
def test_a_rollout_skips_an_instance_on_hold_and_says_whose_hold(instance):
    other = process_instance("hold-b", command=["true"])
    place_hold(instance, minutes=60, reason="driver upgrade", user=user("op-roll", OPERATOR))
    rollout = Rollout.objects.create(instance_names=["hold-a", "hold-b"], strategy="all", state="running")
    result = advance(rollout.pk)
    entries = {entry["instance"]: entry for entry in result.results}
    assert entries["hold-a"]["state"] == "skipped" and entries["hold-a"]["operation"] is None
    assert entries["hold-a"]["detail"].startswith("on hold until ")
    assert entries["hold-a"]["detail"].endswith(" UTC by op-roll: driver upgrade")
    assert entries["hold-b"]["state"] == "queued"
    assert list(Operation.objects.values_list("instance__name", flat=True)) == [other.name]


@pytest.mark.django_db
def test_the_api_places_reads_and_ends_a_hold_with_clear_refusals(instance):
    _, key = ApiToken.issue(user("op-api", OPERATOR), "script")
    _, viewer = ApiToken.issue(user("v-api", VIEWER), "dashboard")
    client = Client()

    def call(method: str, path: str, body=None, token: str = key):
        data = json.dumps(body) if body is not None else ""
        return getattr(client, method)(
            path, data=data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
        )

    assert call("post", "/api/instances/hold-a/hold/", {"minutes": 30, "reason": "x"}, viewer).status_code == 403
    assert call("post", "/api/instances/ghost/hold/", {"minutes": 30, "reason": "x"}).status_code == 404
    bad = call("post", "/api/instances/hold-a/hold/", {"minutes": "soon", "reason": "x"})
    assert bad.status_code == 400 and "a whole number from 1 to 10080" in bad.json()["error"]
    assert call("post", "/api/instances/hold-a/hold/", "[]").status_code == 400
    placed = call("post", "/api/instances/hold-a/hold/", {"minutes": 90, "reason": "new driver"})
    assert placed.status_code == 200 and placed.json()["hold"]["reason"] == "new driver"
    shown = call("get", "/api/instances/hold-a/", token=viewer).json()["hold"]
    assert shown["by"] == "op-api" and shown["until"] == placed.json()["hold"]["until"]
    assert call("delete", "/api/instances/hold-a/hold/").json() == {"instance": "hold-a", "hold": None}
    again = call("delete", "/api/instances/hold-a/hold/")
    assert again.status_code == 409 and again.json()["error"] == "hold-a is not on hold."
    assert call("get", "/api/instances/hold-a/", token=viewer).json()["hold"] is None


@pytest.mark.django_db
def test_the_page_places_and_ends_a_hold_and_viewers_only_see_it(instance):
    operator, viewer = signed_in("page")
    assert b"Put on hold" in operator.get("/instances/hold-a/").content
    assert b"Put on hold" not in viewer.get("/instances/hold-a/").content

    refused = operator.post("/instances/hold-a/hold/", {"minutes": "²", "reason": "x"}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 400 and b"a whole number from 1 to 10080" in refused.content
    no_reason = operator.post("/instances/hold-a/hold/", {"minutes": "60"})
    assert no_reason.status_code == 400 and b"Say why the instance is on hold" in no_reason.content
    assert viewer.post("/instances/hold-a/hold/", {"minutes": "60", "reason": "x"}).status_code == 403
    assert not Hold.objects.exists()

    card = operator.post("/instances/hold-a/hold/", {"minutes": "60", "reason": "<b>swap</b>"}, HTTP_HX_REQUEST="true")
    assert card.status_code == 200 and b"End hold" in card.content and b"&lt;b&gt;swap&lt;/b&gt;" in card.content
    seen = viewer.get("/instances/hold-a/").content.decode()
    assert "&lt;b&gt;swap&lt;/b&gt;" in seen and "End hold" not in seen
    state = json.loads(seen.split('id="live-state" type="application/json">')[1].split("</script>")[0])
    assert state["holds"]["hold-a"]["by"] == "op-page"
    dashboard = viewer.get("/").content.decode()
    assert '"holds": {"hold-a": {' in dashboard and 'data-field="hold" hidden' in dashboard

    ended = operator.post("/instances/hold-a/hold/", {"end": "1"})
    assert ended.status_code == 302 and active_hold(instance) is None
    assert b"Put on hold" in operator.get("/instances/hold-a/hold/").content


@pytest.mark.django_db
def test_the_shell_places_and_ends_a_hold(instance):
    out = StringIO()
    call_command("instance", "hold", "hold-a", minutes=45, reason="swap the card", stdout=out)
    assert "hold-a: on hold until" in out.getvalue() and out.getvalue().endswith(
        " UTC by command line: swap the card\n"
    )
    with pytest.raises(CommandError, match="Say why"):
        call_command("instance", "hold", "hold-a", minutes=45, reason="")
    call_command("instance", "unhold", "hold-a", stdout=out)
    assert "hold-a: hold ended" in out.getvalue() and active_hold(instance) is None
    with pytest.raises(CommandError, match="not on hold"):
        call_command("instance", "unhold", "hold-a")


@pytest.fixture
def machine(db):
    """Host gpu-h with two instances, and an instance on another host that no host hold may touch."""
    process_instance("elsewhere", command=["true"])
    gpu = host("gpu-h")
    return gpu, [process_instance(name, command=["true"], host=gpu) for name in ("gpu-h-1", "gpu-h-2")]


def held_names() -> list[str]:
    return sorted(Hold.objects.filter(until__gt=timezone.now()).values_list("instance__name", flat=True))


@pytest.mark.django_db
def test_a_hosts_instances_are_held_all_or_none_each_with_its_audit(machine):
    _gpu, instances = machine
    operator = user("op-host", OPERATOR)
    with pytest.raises(HoldRefused, match="Say why"):
        place_holds(instances, minutes=60, reason="", user=operator)
    with pytest.raises(HoldRefused, match="no instance"):
        place_holds([], minutes=60, reason="x", user=operator)
    assert held_names() == []
    holds = place_holds(instances, minutes=60, reason="driver 580 to 590", user=operator)
    assert [hold.instance.name for hold in holds] == ["gpu-h-1", "gpu-h-2"] == held_names()
    assert {hold.reason for hold in holds} == {"driver 580 to 590"}
    audited = AuditEntry.objects.filter(action="instance.held").values_list("target", flat=True)
    assert sorted(audited) == ["instance gpu-h-1", "instance gpu-h-2"]


@pytest.mark.django_db
def test_the_api_holds_and_releases_a_hosts_instances(machine):
    _, key = ApiToken.issue(user("op-hapi", OPERATOR), "script")
    _, viewer = ApiToken.issue(user("v-hapi", VIEWER), "dashboard")
    host("empty-host")
    client = Client()

    def call(method: str, path: str, body=None, token: str = key):
        data = json.dumps(body) if body is not None else ""
        return getattr(client, method)(
            path, data=data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
        )

    body = {"minutes": 120, "reason": "swap GPU 1"}
    assert call("post", "/api/hosts/gpu-h/hold/", body, viewer).status_code == 403
    assert call("post", "/api/hosts/ghost/hold/", body).json()["error"] == "No host named 'ghost'."
    empty = call("post", "/api/hosts/empty-host/hold/", body)
    assert empty.status_code == 409 and empty.json()["error"] == "No instance is registered on empty-host."
    bad = call("post", "/api/hosts/gpu-h/hold/", {"minutes": 20000, "reason": "x"})
    assert bad.status_code == 400 and "from 1 to 10080" in bad.json()["error"] and held_names() == []
    placed = call("post", "/api/hosts/gpu-h/hold/", body)
    assert placed.status_code == 200 and sorted(placed.json()["holds"]) == ["gpu-h-1", "gpu-h-2"] == held_names()
    assert placed.json()["holds"]["gpu-h-2"]["reason"] == "swap GPU 1"
    assert call("get", "/api/instances/gpu-h-1/", token=viewer).json()["hold"]["by"] == "op-hapi"

    end_hold(Instance.objects.get(name="gpu-h-1"))  # one already back in service
    ended = call("delete", "/api/hosts/gpu-h/hold/")
    assert ended.json() == {"host": "gpu-h", "ended": ["gpu-h-2"]} and held_names() == []
    again = call("delete", "/api/hosts/gpu-h/hold/")
    assert again.status_code == 409 and again.json()["error"] == "No instance on gpu-h is on hold."


@pytest.mark.django_db
def test_the_host_page_holds_its_instances_and_viewers_only_see_it(machine):
    operator, viewer = signed_in("hpage")
    assert b"Put every instance on hold" in operator.get("/hosts/gpu-h/").content
    assert b"Put every instance on hold" not in viewer.get("/hosts/gpu-h/").content
    assert viewer.post("/hosts/gpu-h/hold/", {"minutes": "60", "reason": "x"}).status_code == 403
    refused = operator.post("/hosts/gpu-h/hold/", {"minutes": "60", "reason": " "}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 400 and b"Say why the instance is on hold" in refused.content
    assert held_names() == []

    card = operator.post("/hosts/gpu-h/hold/", {"minutes": "60", "reason": "reboot"}, HTTP_HX_REQUEST="true")
    assert card.status_code == 200 and b"2 of 2 instances on this host are on hold" in card.content
    assert held_names() == ["gpu-h-1", "gpu-h-2"]
    seen = viewer.get("/hosts/gpu-h/").content.decode()
    assert "2 of 2 instances on this host are on hold" in seen and "End their holds" not in seen
    state = json.loads(seen.split('id="live-state" type="application/json">')[1].split("</script>")[0])
    assert sorted(state["holds"]) == ["gpu-h-1", "gpu-h-2"]

    ended = operator.post("/hosts/gpu-h/hold/", {"end": "1"})
    assert ended.status_code == 302 and ended["Location"] == "/hosts/gpu-h/" and held_names() == []
    assert b"on this host are on hold" not in operator.get("/hosts/gpu-h/hold/").content


@pytest.mark.django_db
def test_the_shell_holds_and_releases_a_hosts_instances(machine):
    out = StringIO()
    call_command("instance", "hold", "gpu-h", host=True, minutes=30, reason="firmware", stdout=out)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["gpu-h-1", "gpu-h-2"] == held_names()
    assert all(line.endswith(" UTC by command line: firmware") for line in lines)
    with pytest.raises(CommandError, match="--host goes with hold and unhold only"):
        call_command("instance", "restart", "gpu-h", host=True)
    with pytest.raises(CommandError, match="No host named 'nope'"):
        call_command("instance", "hold", "nope", host=True, reason="x")
    call_command("instance", "unhold", "gpu-h", host=True, stdout=out)
    assert "gpu-h-2: hold ended" in out.getvalue() and held_names() == []
    with pytest.raises(CommandError, match="No instance on gpu-h is on hold"):
        call_command("instance", "unhold", "gpu-h", host=True)
