"""Hosts: each worker's report (sign of life, NVML snapshot with owners), online from its age, on the
dashboard, a host's page and the API."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from console.api.models import ApiToken
from console.host.gpu import GpuDevice, GpuProcess
from console.host.process import ProcessRuntime
from console.instances.models import Host
from console.instances.roles import VIEWER
from console.telemetry import sampler
from console.telemetry.hosts import host_summary
from console.telemetry.models import Sample
from tests.conftest import wait_http
from tests.factories import process_instance, user


@pytest.mark.django_db
def test_a_round_reports_the_host_even_without_instances(monkeypatch):
    monkeypatch.setattr(sampler.gpu, "nvml_available", lambda: False)  # as on this CPU machine
    monkeypatch.setattr(sampler.gpu, "nvml_error", lambda: "no NVIDIA GPU (driver not loaded)")
    Host.objects.create(name="empty")
    assert sampler.sample_host("empty") == 0
    host = Host.objects.get(name="empty")
    assert timezone.now() - host.seen_at < timedelta(seconds=5)
    assert host.gpus == [] and host.nvml == "no NVIDIA GPU (driver not loaded)"


@pytest.mark.django_db(transaction=True)
def test_the_snapshot_names_the_instance_holding_each_gpu_and_flags_strangers(managed, monkeypatch):
    instance = managed("holder-a")
    ProcessRuntime().start(instance)
    wait_http(instance.base_url + "/health/ready", timeout=90)
    pid = ProcessRuntime().status(instance).pids[0]
    # NVML faked on this CPU machine; the real path runs in tests/gpu on the GPU host.
    monkeypatch.setattr(sampler.gpu, "nvml_available", lambda: True)
    monkeypatch.setattr(sampler.gpu, "devices", lambda: [GpuDevice(0, "H200", 30 * 2**30, 141 * 2**30, 50, 60, 300.0)])
    monkeypatch.setattr(sampler.gpu, "processes", lambda: [GpuProcess(pid, 0, 20 * 2**30), GpuProcess(4242, 0, 2**30)])
    assert sampler.sample_host("local") == 1
    [device] = Host.objects.get(name="local").gpus
    assert device["name"] == "H200" and device["total"] == 141 * 2**30
    assert device["processes"] == [
        {"pid": pid, "used": 20 * 2**30, "instance": "holder-a"},
        {"pid": 4242, "used": 2**30, "instance": None},
    ]


@pytest.mark.django_db
def test_online_follows_the_age_of_the_last_report(settings):
    settings.TELEMETRY_SAMPLE_SECONDS = 5  # a report counts for 30 s
    now = timezone.now()
    host = Host(name="b", seen_at=now - timedelta(seconds=10))
    assert host_summary(host, now)["online"] is True
    host.seen_at = now - timedelta(seconds=31)
    summary = host_summary(host, now)
    assert summary["online"] is False and summary["seen_age_seconds"] == 31
    host.seen_at = None
    assert host_summary(host, now)["online"] is False and host_summary(host, now)["seen_age_seconds"] is None


def _silent_host_with_a_stale_sample():
    host = Host.objects.create(name="silent", seen_at=timezone.now() - timedelta(minutes=10))
    instance = process_instance("silent-1", host=host, command=["true"])
    Sample.objects.create(instance=instance, at=timezone.now() - timedelta(minutes=10), status="ready", probe_ok=True)
    return host, instance


@pytest.mark.django_db
def test_the_dashboard_shows_hosts_and_sends_each_sample_with_its_age():
    _silent_host_with_a_stale_sample()
    Host.objects.create(name="fresh", seen_at=timezone.now())
    client = Client()
    client.force_login(user("v", VIEWER))
    page = client.get("/")
    html = page.content.decode()
    assert 'data-host-card="silent"' in html and 'data-host-card="fresh"' in html
    state = page.context["live_state"]
    assert state["samples"]["silent-1"]["age"] > 500 and state["samples"]["silent-1"]["host"] == "silent"
    assert state["hosts"]["silent"] > 500 and state["hosts"]["fresh"] < 5
    assert state["stale_seconds"] >= 30
    cards = {h["name"]: h for h in page.context["host_cards"]}
    assert cards["silent"]["online"] is False and cards["fresh"]["online"] is True
    assert cards["silent"]["instances"] == 1


@pytest.mark.django_db
def test_a_host_page_lists_its_gpus_with_their_holders_and_refreshes_them():
    host, _ = _silent_host_with_a_stale_sample()
    host.gpus = [
        {
            "index": 0,
            "name": "NVIDIA H200",
            "used": 21 * 2**30,
            "total": 141 * 2**30,
            "util": 40,
            "temp": 50,
            "power": 310.0,
            "processes": [
                {"pid": 101, "used": 20 * 2**30, "instance": "silent-1"},
                {"pid": 202, "used": 2**30, "instance": None},
            ],
        }
    ]
    host.save()
    client = Client()
    client.force_login(user("v", VIEWER))
    page = client.get("/hosts/silent/").content.decode()
    assert "NVIDIA H200" in page and "21.0 / 141.0 GiB" in page
    assert 'href="/instances/silent-1/"' in page and "pid 101, 20.0 GiB" in page
    assert "not an instance" in page and "pid 202" in page
    assert "Its worker is not reporting" in page and 'id="instance-silent-1"' in page
    fragment = client.get("/hosts/silent/", HTTP_HX_REQUEST="true").content.decode()
    assert "NVIDIA H200" in fragment and "<html" not in fragment
    assert client.get("/hosts/nope/").status_code == 404


@pytest.mark.django_db
def test_the_api_lists_hosts_and_filters_instances_by_host_and_group():
    _silent_host_with_a_stale_sample()
    process_instance("local-1", command=["true"], group="g")
    _, key = ApiToken.issue(user("v", VIEWER), "script")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    client = Client()
    hosts = {h["name"]: h for h in client.get("/api/hosts/", **auth).json()["hosts"]}
    assert hosts["silent"]["online"] is False and hosts["silent"]["instances"] == 1
    assert hosts["silent"]["queue"] == "host.silent"
    assert client.get("/api/hosts/silent/", **auth).json()["seen_age_seconds"] > 500
    on_silent = client.get("/api/instances/?host=silent", **auth).json()["instances"]
    assert [i["name"] for i in on_silent] == ["silent-1"] and on_silent[0]["status"] == "unknown"
    assert [i["name"] for i in client.get("/api/instances/?group=g", **auth).json()["instances"]] == ["local-1"]
    missing = client.get("/api/instances/?host=nope", **auth)
    assert missing.status_code == 404 and "nope" in json.loads(missing.content)["error"]


@pytest.mark.django_db
def test_hosts_take_turns_over_the_sampling_interval(settings, monkeypatch):
    """Each host's round is asked for at its own offset in the interval (and expires one interval
    after it), so that the console never gets every host's round at one instant."""
    from celery import current_app

    from console.instances.models import host_queue
    from console.telemetry import tasks

    settings.TELEMETRY_SAMPLE_SECONDS = 6
    names = sorted({*Host.objects.values_list("name", flat=True), "gpu-b", "gpu-a", "gpu-c"})
    for name in names:
        Host.objects.get_or_create(name=name)
    # Kombu's in-memory transport: the messages as a broker would hold them, read back here.
    with current_app.connection_for_write("memory://") as connection:
        send = tasks.sample_host.apply_async
        monkeypatch.setattr(tasks.sample_host, "apply_async", lambda *a, **kw: send(*a, connection=connection, **kw))
        asked = timezone.now()
        assert tasks.sample_all.run() == len(names)
        offsets = []
        for name in names:
            message = connection.SimpleQueue(host_queue(name)).get(timeout=1)
            assert message.headers["argsrepr"] == repr([name])
            eta = timezone.datetime.fromisoformat(message.headers["eta"] or asked.isoformat())  # none: at once
            expires = timezone.datetime.fromisoformat(message.headers["expires"])
            offsets.append((eta - asked).total_seconds())
            assert abs((expires - eta).total_seconds() - 6) < 0.5
            message.ack()
    step = 6 / len(names)
    assert [round(offset / step) for offset in offsets] == list(range(len(names)))
