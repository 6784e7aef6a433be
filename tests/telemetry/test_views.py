"""Series, Diagnose and log download pages: permissions, bad input, content."""

import pytest
from django.core.cache import cache
from django.utils import timezone

from console.telemetry.follow import tail_key
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


def test_dashboard_shows_badge_and_figures_and_filters(viewer_client, instance):
    process_instance("view-b", command=["true"], group="gpu-b")
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
    page = viewer_client.get("/").content.decode()
    assert 'class="badge degraded"' in page and "432 ms" in page and "40.0 / 80.0 GiB" in page
    assert "width:50%" in page and "7 / 3" in page and "2h 01m" in page
    filtered = viewer_client.get("/?group=gpu-b").content.decode()
    assert 'data-instance="view-b"' in filtered and 'data-instance="view-a"' not in filtered
