"""The JSON API: tokens, the same permissions as the pages, clear errors."""

import json

import pytest
from django.test import Client

from console.api.models import ApiToken
from console.instances.roles import OPERATOR, VIEWER
from console.operations.models import Operation
from tests.factories import process_instance, user


@pytest.fixture
def instance(db):
    return process_instance("api-a", command=["true"])


def bearer(key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def post(client: Client, path: str, body, key: str):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **bearer(key))


@pytest.mark.django_db
def test_without_a_token_the_api_says_how_to_authenticate(instance):
    response = Client().get("/api/instances/")
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]
    assert Client().get("/api/instances/", **bearer("ic_wrong")).status_code == 401


@pytest.mark.django_db
def test_operator_lists_requests_and_reads_an_operation(instance):
    _, key = ApiToken.issue(user("op1", OPERATOR), "script")
    client = Client()
    listed = client.get("/api/instances/", **bearer(key)).json()
    assert [i["name"] for i in listed["instances"]] == ["api-a"]

    created = post(client, "/api/instances/api-a/operations/", {"kind": "restart", "reason": "deploy"}, key)
    assert created.status_code == 202
    body = created.json()
    assert body["state"] == "queued" and body["kind"] == "restart" and body["requested_by"] == "op1"
    operation = Operation.objects.get(pk=body["id"])
    assert operation.trigger == "api" and operation.reason == "deploy"

    joined = post(client, "/api/instances/api-a/operations/", {"kind": "restart"}, key)
    assert joined.status_code == 200 and joined.json()["joined"] is True and joined.json()["id"] == body["id"]

    refused = post(client, "/api/instances/api-a/operations/", {"kind": "stop"}, key)
    assert refused.status_code == 409 and "wait for it to finish" in refused.json()["error"]

    read = client.get(f"/api/operations/{body['id']}/", **bearer(key)).json()
    assert read["id"] == body["id"] and read["steps"] == []
    detail = client.get("/api/instances/api-a/", **bearer(key)).json()
    assert detail["active_operation"] == body["id"]


@pytest.mark.django_db
def test_viewer_token_can_read_but_not_operate(instance):
    _, key = ApiToken.issue(user("view1", VIEWER), "dashboard")
    client = Client()
    assert client.get("/api/instances/api-a/", **bearer(key)).status_code == 200
    response = post(client, "/api/instances/api-a/operations/", {"kind": "restart"}, key)
    assert response.status_code == 403
    assert not Operation.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/api/instances/nope/operations/", {"kind": "restart"}, 404, "No instance named 'nope'"),
        ("/api/instances/api-a/operations/", {"kind": "reboot"}, 400, "'kind': must be one of"),
        ("/api/instances/api-a/operations/", "{broken", 400, "must be JSON"),
        ("/api/instances/api-a/operations/", [1], 400, "JSON object"),
        ("/api/instances/api-a/operations/", {"kind": "restart", "reason": "x" * 501}, 400, "500 characters"),
        ("/api/instances/api-a/operations/", {"kind": "stop", "reload_weights": True}, 400, "Only a restart"),
        ("/api/instances/api-a/operations/", {"kind": "restart", "reload_weights": "yes"}, 400, "true or false"),
        ("/api/instances/api-a/operations/", {"kind": "restart", "recreate": 1}, 400, "'recreate' must be true"),
    ],
)
def test_bad_requests_change_nothing(instance, path, body, status, message):
    _, key = ApiToken.issue(user("op2", OPERATOR), "script")
    response = post(Client(), path, body, key)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert not Operation.objects.exists()


@pytest.mark.django_db
def test_session_post_without_csrf_is_refused(instance):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user("op3", OPERATOR))
    response = client.post(
        "/api/instances/api-a/operations/", data='{"kind": "restart"}', content_type="application/json"
    )
    assert response.status_code == 403
    assert not Operation.objects.exists()


@pytest.mark.django_db
def test_tokens_are_stored_hashed_and_revocable(instance):
    account = user("op4", OPERATOR)
    client = Client()
    client.force_login(account)
    page = client.post("/accounts/tokens/", {"name": "ci"})
    key = page.context["new_key"]
    token = ApiToken.objects.get(user=account)
    assert key not in (token.key_hash, token.prefix) and key.startswith(token.prefix)
    assert Client().get("/api/instances/", **bearer(key)).status_code == 200
    client.post(f"/accounts/tokens/{token.pk}/revoke/")
    assert Client().get("/api/instances/", **bearer(key)).status_code == 401
    assert client.post("/accounts/tokens/", {"name": ""}).status_code == 400


@pytest.mark.django_db
def test_tokens_expire_after_the_lifetime_chosen_and_say_so(instance):
    from datetime import timedelta

    from django.utils import timezone

    from console.audit.models import AuditEntry

    account = user("op-life", OPERATOR)
    client = Client()
    client.force_login(account)
    before = timezone.now()
    month = client.post("/accounts/tokens/", {"name": "month", "lifetime": "30"})
    forever = client.post("/accounts/tokens/", {"name": "scraper", "lifetime": "never"})
    default = client.post("/accounts/tokens/", {"name": "plain"})
    assert {month.status_code, forever.status_code, default.status_code} == {200}
    tokens = {t.name: t for t in ApiToken.objects.filter(user=account)}
    assert timedelta(days=30) <= tokens["month"].expires - before < timedelta(days=30, minutes=1)
    assert timedelta(days=90) <= tokens["plain"].expires - before < timedelta(days=90, minutes=1)
    assert tokens["scraper"].expires is None
    created = AuditEntry.objects.filter(action="token.created").values_list("outcome", flat=True)
    assert any("never expires" in o for o in created) and any("expires 20" in o for o in created)

    refused = client.post("/accounts/tokens/", {"name": "week", "lifetime": "7"})
    assert refused.status_code == 400 and b"Choose a lifetime of 30, 90, 365, never days." in refused.content
    assert not ApiToken.objects.filter(name="week").exists()

    key = month.context["new_key"]
    assert Client().get("/api/instances/", **bearer(key)).status_code == 200
    ApiToken.objects.filter(name="month").update(expires=timezone.now() - timedelta(seconds=1))
    expired = Client().get("/api/instances/", **bearer(key))
    assert expired.status_code == 401
    assert f"The token {key[:8]}… (month) expired at" in expired.json()["error"]
    # A script's stale key is refused even from a client that also holds a session: it never acts as someone else.
    assert client.get("/api/instances/", **bearer(key)).status_code == 401
    assert client.get("/api/instances/").status_code == 200
    page = client.get("/accounts/tokens/").content.decode()
    assert page.count(">expired</span>") == 1 and "never" in page

    unknown = Client().get("/api/instances/", **bearer("ic_" + "x" * 43))
    assert unknown.status_code == 401 and "not known" in unknown.json()["error"]
    account.is_active = False
    account.save()
    disabled = Client().get("/api/instances/", **bearer(forever.context["new_key"]))
    assert disabled.status_code == 401 and disabled.json()["error"] == "The token's account is disabled."


@pytest.mark.django_db
def test_rollouts_through_the_api_with_clear_refusals(instance):
    process_instance("api-b", command=["true"], group="pair")
    process_instance("api-c", command=["true"], group="pair")
    _, key = ApiToken.issue(user("op-roll", OPERATOR), "script")
    _, viewer_key = ApiToken.issue(user("viewer-roll", VIEWER), "script")
    client = Client()
    assert post(client, "/api/rollouts/", {"group": "pair"}, viewer_key).status_code == 403
    unknown = post(client, "/api/rollouts/", {"group": "nope"}, key)
    assert unknown.status_code == 400 and "No enabled instance in group 'nope'" in unknown.json()["error"]
    both = post(client, "/api/rollouts/", {"group": "pair", "instances": ["api-a"]}, key)
    assert both.status_code == 400 and "either a group or a list" in both.json()["error"]
    missing = post(client, "/api/rollouts/", {"instances": ["api-a", "ghost"]}, key)
    assert missing.status_code == 400 and "ghost" in missing.json()["error"]
    bad_strategy = post(client, "/api/rollouts/", {"group": "pair", "strategy": "random"}, key)
    assert bad_strategy.status_code == 400 and "strategy" in bad_strategy.json()["error"].lower()
    created = post(client, "/api/rollouts/", {"group": "pair", "reason": "nightly"}, key)
    assert created.status_code == 202
    body = created.json()
    assert body["instances"] == ["api-b", "api-c"] and body["state"] == "queued" and body["trigger"] == "api"
    assert client.get(f"/api/rollouts/{body['id']}/", **bearer(viewer_key)).json()["reason"] == "nightly"
    assert body["reload_weights"] is False
    flags = post(client, "/api/rollouts/", {"group": "pair", "skip_busy": "no", "reload_weights": 1}, key)
    assert flags.status_code == 400
    assert flags.json()["error"] == "'skip_busy' and 'reload_weights' must be true or false."
    picky = post(client, "/api/rollouts/", {"group": "pair", "skip_healthy": "yes"}, key)
    assert picky.json() == {"error": "'skip_healthy' must be true or false."}
    picky = post(client, "/api/rollouts/", {"group": "pair", "skip_healthy": True}, key)
    assert picky.status_code == 202 and picky.json()["skip_healthy"] is True and body["skip_healthy"] is False
    reload = post(client, "/api/rollouts/", {"instances": ["api-b"], "reload_weights": True}, key)
    assert reload.status_code == 202 and reload.json()["reload_weights"] is True


@pytest.mark.django_db
def test_a_script_can_ask_whether_an_instance_is_down(instance):
    from datetime import timedelta

    from django.utils import timezone

    from console.telemetry.models import Sample

    _, key = ApiToken.issue(user("script", VIEWER), "probe")
    client = Client()

    def state() -> dict:
        return client.get("/api/instances/api-a/", **bearer(key)).json()

    never = state()
    assert (never["status"], never["badge"], never["ready"], never["sample"]) == ("unknown", "unknown", False, None)

    Sample.objects.create(instance=instance, at=timezone.now() - timedelta(seconds=2), status="down", p95_ms=12.0)
    down = state()
    assert (down["status"], down["badge"], down["ready"]) == ("down", "down", False)
    assert down["sample"]["p95_ms"] == 12.0 and 1 < down["sample"]["age_seconds"] < 30

    Sample.objects.create(instance=instance, at=timezone.now(), status="ready")
    operation = Operation.objects.create(instance=instance, kind="restart", state="running")
    restarting = state()
    assert (restarting["status"], restarting["badge"], restarting["ready"]) == ("ready", "restarting", True)
    assert restarting["operation"]["id"] == operation.pk and restarting["operation"]["state"] == "running"

    Operation.objects.filter(pk=operation.pk).update(state="succeeded")
    Sample.objects.update(at=timezone.now() - timedelta(minutes=10))  # the host's worker went silent
    silent = state()
    assert (silent["status"], silent["ready"], silent["operation"]) == ("unknown", False, None)
    assert silent["sample"]["age_seconds"] > 500
    listed = client.get("/api/instances/", **bearer(key)).json()["instances"]
    assert listed[0]["name"] == "api-a" and listed[0]["status"] == "unknown"


@pytest.mark.django_db
def test_a_script_checks_whether_a_restart_would_help_before_asking_one(instance):
    """The runbook's check, by the API and the command line: the same verdict as the page's Diagnose."""
    from io import StringIO

    from django.core.management import call_command

    from tests.factories import sample_history

    _, key = ApiToken.issue(user("checker", VIEWER), "check")
    client = Client()
    assert client.get("/api/instances/api-a/diagnosis/", **bearer(key)).json()["verdict"] == "no_data"
    sample_history(instance, p95_ms=lambda i: 100.0 if i < 5 else 400.0)
    found = client.get("/api/instances/api-a/diagnosis/", **bearer(key)).json()
    assert found["verdict"] == "soft_decay" and found["samples"] == 10
    latency = next(row for row in found["findings"] if row["rule"] == "latency")
    assert latency == {
        "rule": "latency",
        "level": "warn",
        "summary": "Responses are slower than after the last start.",
        "evidence": ["p95 400 ms, baseline 100 ms"],
    }
    assert client.get("/api/instances/nope/diagnosis/", **bearer(key)).status_code == 404
    assert client.post("/api/instances/api-a/diagnosis/", **bearer(key)).status_code == 405

    out = StringIO()
    call_command("instance", "diagnose", "api-a", stdout=out)
    assert out.getvalue().startswith("soft_decay: Memory has room and the log is clean, yet it is slower")
    assert (
        "     warn  latency: Responses are slower than after the last start. (p95 400 ms, baseline 100 ms)"
        in out.getvalue()
    )
    out = StringIO()
    call_command("instance", "diagnose", "api-a", "--json", stdout=out)
    assert json.loads(out.getvalue()) == found


@pytest.mark.django_db
def test_a_nightly_script_restarts_only_if_needed(instance):
    """A cron job's restart with the runbook's check first: refused, saying why, when the checklist finds
    nothing to cure; queued once p95 has crept up."""
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from console.audit.models import AuditEntry
    from console.telemetry.models import Sample
    from tests.factories import sample_history

    _, key = ApiToken.issue(user("cron", OPERATOR), "nightly")
    client = Client()
    sample_history(instance)
    asked = {"kind": "restart", "reason": "nightly", "only_if_needed": True}
    refused = post(client, "/api/instances/api-a/operations/", asked, key)
    assert refused.status_code == 409
    assert refused.json()["error"] == (
        "api-a is healthy by its checklist (p95 100 ms, baseline 100 ms): nothing for a restart to cure "
        "(only if needed)."
    )
    assert not Operation.objects.exists()
    assert AuditEntry.objects.filter(action="operation.restart", outcome__contains="(only if needed)").exists()
    with pytest.raises(CommandError, match="nothing for a restart to cure"):
        call_command("instance", "soft-reset", "api-a", "--only-if-needed")
    bad = post(client, "/api/instances/api-a/operations/", {**asked, "only_if_needed": "yes"}, key)
    assert bad.json() == {"error": "'only_if_needed' must be true or false."}

    Sample.objects.all().delete()
    sample_history(instance, p95_ms=lambda i: 100.0 if i < 5 else 400.0)  # slower than its baseline since
    queued = post(client, "/api/instances/api-a/operations/", asked, key)
    assert queued.status_code == 202 and Operation.objects.get().kind == "restart"
