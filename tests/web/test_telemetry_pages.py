"""Series, Diagnose and log download pages: permissions, bad input, content."""

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console.host.logs import tail_key
from console.operations.models import Operation
from console.telemetry.models import Sample
from tests.factories import process_instance, user


@pytest.fixture
def viewer_client(client, db):
    user("viewer-t", role="viewer")
    client.login(username="viewer-t", password="pw-for-tests-123")
    return client


@pytest.fixture
def instance(db):
    return process_instance("view-a", command=["true"])


def test_anonymous_users_are_sent_to_login(client, instance):
    for url in ("/instances/view-a/series/", "/instances/view-a/diagnose/", "/instances/view-a/logs/download/"):
        assert client.get(url).status_code == 302


def test_series_returns_columns_for_the_range_and_refuses_unknown_ranges(viewer_client, instance):
    Sample.objects.create(instance=instance, at=timezone.now(), status="ready", p95_ms=12.5, gpu_used=1, gpu_total=2)
    body = viewer_client.get("/instances/view-a/series/?range=15m").json()
    assert body["columns"]["p95_ms"] == [12.5] and len(body["columns"]["t"]) == 1
    bad = viewer_client.get("/instances/view-a/series/?range=1y")
    assert bad.status_code == 400 and "Unknown range" in bad.json()["error"]
    assert viewer_client.get("/instances/nope/series/").status_code == 404


def test_diagnose_panel_renders_the_verdict(viewer_client, instance):
    Sample.objects.create(instance=instance, at=timezone.now(), status="down", data={"detail": "not running"})
    response = viewer_client.get("/instances/view-a/diagnose/")
    assert response.status_code == 200 and b'data-verdict="down"' in response.content


def test_log_download_filters_and_rejects_bad_input(viewer_client, instance):
    cache.set(
        tail_key("view-a"),
        [{"text": "INFO fine", "level": "info"}, {"text": "ERROR broke", "level": "error"}],
    )
    try:
        response = viewer_client.get("/instances/view-a/logs/download/?level=error")
        assert response.status_code == 200
        assert response["Content-Disposition"].startswith('attachment; filename="view-a-')
        assert response.content == b"ERROR broke\n"
        assert viewer_client.get("/instances/view-a/logs/download/?contains=fine").content == b"INFO fine\n"
        assert viewer_client.get("/instances/view-a/logs/download/?level=loud").status_code == 400
        assert viewer_client.get("/instances/view-a/logs/download/?contains=" + "x" * 500).status_code == 400
        # No path ever reaches the file system: traversal is not even routed.
        assert viewer_client.get("/instances/..%2F..%2Fetc%2Fpasswd/logs/download/").status_code == 404
    finally:
        cache.delete(tail_key("view-a"))


def live_state(page) -> dict:
    return page.context["live_state"]


def test_dashboard_hands_each_instance_s_latest_sample_and_operation_to_the_page(viewer_client, instance):
    process_instance("view-b", command=["true"], group="gpu-b")
    Sample.objects.create(instance=instance, at=timezone.now(), status="ready", p95_ms=100.0)
    Sample.objects.create(
        instance=instance,
        at=timezone.now(),
        status="degraded",
        p95_ms=432.0,
        gpu_used=40 * 2**30,
        gpu_total=80 * 2**30,
        established=7,
        close_wait=3,
        data={"uptime": 7300},
    )
    operation = Operation.objects.create(instance=instance, kind="restart", state="succeeded")
    page = viewer_client.get("/")
    state = live_state(page)
    assert state["samples"]["view-a"]["status"] == "degraded" and state["samples"]["view-a"]["p95_ms"] == 432.0
    assert state["samples"]["view-a"]["uptime"] == 7300 and "view-b" not in state["samples"]
    assert state["operations"]["view-a"]["id"] == operation.pk and "view-b" not in state["operations"]
    assert b'id="live-state"' in page.content
    filtered = viewer_client.get("/?group=gpu-b").content.decode()
    assert 'data-instance="view-b"' in filtered and 'data-instance="view-a"' not in filtered


def test_dashboard_queries_do_not_grow_with_instances(viewer_client, instance):
    def fleet(first: int, last: int) -> None:
        for n in range(first, last):
            other = process_instance(f"fleet-{n}", command=["true"], group="fleet")
            Sample.objects.create(instance=other, at=timezone.now(), status="ready")
            Operation.objects.create(instance=other, kind="restart", state="succeeded")

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert viewer_client.get("/").status_code == 200
        return len(queries)

    fleet(0, 5)
    at_five = count()
    fleet(5, 50)
    assert count() == at_five, "the dashboard's queries grew with the number of instances"
