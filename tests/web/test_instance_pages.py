"""Instance pages: login required, operate permission checked on the server, forms say what is wrong."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from console.audit.models import AuditEntry
from console.instances.roles import OPERATOR, VIEWER
from console.operations.models import Operation
from tests.factories import process_instance, user


@pytest.fixture
def instance(db):
    return process_instance("page-a", command=["true"], display_name="GPU A")


@pytest.mark.django_db
def test_pages_need_login(instance):
    for path in ("/", "/instances/page-a/", "/accounts/tokens/"):
        response = Client().get(path)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.django_db
def test_viewer_sees_the_instance_but_may_not_restart_it(instance):
    client = Client()
    client.force_login(user("v", VIEWER))
    page = client.get("/instances/page-a/")
    assert page.status_code == 200 and b"GPU A" in page.content and b'id="operate"' not in page.content
    response = client.post("/instances/page-a/operations/", {"kind": "restart"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 403 and b"may look at instances but not operate them" in response.content
    assert not Operation.objects.exists()


@pytest.mark.django_db
def test_a_refusal_is_one_log_line_not_a_traceback(instance, caplog):
    client = Client()
    client.force_login(user("v2", VIEWER))
    with caplog.at_level(logging.INFO):
        assert client.post("/instances/page-a/operations/", {"kind": "restart"}).status_code == 403
    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(refusals) == 1 and "Forbidden" in refusals[0].getMessage() and refusals[0].exc_info is None


@pytest.mark.django_db
def test_an_account_without_a_role_sees_no_instance(instance):
    client = Client()
    client.force_login(user("nobody"))
    for path in ("/", "/instances/page-a/", "/instances/page-a/series/", "/audit/"):
        response = client.get(path)
        assert response.status_code == 403 and b"no role that may see instances" in response.content, path


@pytest.mark.django_db
def test_operator_restart_returns_the_live_progress_partial(instance):
    client = Client()
    client.force_login(user("o", OPERATOR))
    response = client.post(
        "/instances/page-a/operations/", {"kind": "restart", "reason": "slow"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    operation = Operation.objects.get()
    assert f"Restart #{operation.pk}".encode() in response.content
    assert b"every 2s" not in response.content  # the page's live events refresh it, not polling
    assert operation.requested_by.username == "o" and operation.reason == "slow"


def test_an_operation_page_is_titled_for_it_and_says_when_it_ran_in_which_zone(instance, settings):
    """Its tab among many; and its card (live, on the instance's page too) when it started and ended."""
    settings.TIME_ZONE = "Asia/Shanghai"
    started = datetime(2026, 12, 5, 1, 0, 0, tzinfo=UTC)
    operation = Operation.objects.create(
        instance=instance,
        kind="restart",
        state="succeeded",
        started=started,
        finished=started + timedelta(seconds=2.46),
    )
    client = Client()
    client.force_login(user("v", VIEWER))
    page = client.get(f"/operations/{operation.pk}/").content.decode()
    assert f"<title>Restart #{operation.pk} · GPU A · Instance Console</title>" in page
    assert "started 2026-12-05 09:00:00 CST · ended 09:00:02, after 2.5 s" in page
    assert (
        "started" not in client.get(f"/operations/{Operation.objects.create(instance=instance).pk}/").content.decode()
    )


@pytest.mark.django_db
def test_unknown_operation_kind_is_a_form_error(instance):
    client = Client()
    client.force_login(user("o2", OPERATOR))
    response = client.post("/instances/page-a/operations/", {"kind": "format-disk"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    assert b"must be one of restart" in response.content
    assert not Operation.objects.exists()


@pytest.mark.django_db
def test_unknown_instance_is_404(instance):
    client = Client()
    client.force_login(user("o3", OPERATOR))
    assert client.get("/instances/nope/").status_code == 404
    assert client.post("/instances/nope/operations/", {"kind": "restart"}).status_code == 404


@pytest.mark.django_db
def test_a_refusal_is_said_in_the_readers_language_and_audited_in_english(instance):
    client = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
    client.force_login(user("o3", OPERATOR))
    assert client.post("/instances/page-a/operations/", {"kind": "stop"}, HTTP_HX_REQUEST="true").status_code == 200
    stop = Operation.objects.get()
    response = client.post("/instances/page-a/operations/", {"kind": "restart"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 409
    assert f"page-a 的停止 #{stop.pk} 状态为排队中；请等待它结束。" in response.content.decode()
    refused = AuditEntry.objects.filter(action="operation.restart").latest("pk")
    assert refused.outcome == f"refused: Stop #{stop.pk} is queued for page-a; wait for it to finish."
