"""Sampling real instances: a smoke server process answering, one that is down, GPU mapping."""

import json
import math
import os
import time

import httpx
import pytest

from console.host import process
from console.host.gpu import GpuDevice, GpuProcess
from console.host.process import ProcessRuntime
from console.host.server import Probe
from console.telemetry import sampler
from console.telemetry.health import standby_of
from console.telemetry.models import Sample
from tests.conftest import wait_http
from tests.factories import process_instance
from tests.inference.helpers import chat


@pytest.mark.django_db(transaction=True)
def test_a_ready_server_is_sampled_with_its_health_and_connections(managed):
    instance = managed("sample-a")
    ProcessRuntime().start(instance)
    wait_http(instance.base_url + "/health/ready", timeout=90)
    with httpx.Client() as client:  # a keep-alive connection stays ESTABLISHED
        for _ in range(3):
            assert client.post(instance.base_url + "/v1/chat/completions", json=chat()).status_code == 200
        assert sampler.sample_host("local") == 1
    sample = Sample.objects.get(instance=instance)
    assert sample.status == "ready" and sample.probe_ok and sample.probe_ms > 0
    assert sample.p50_ms > 0 and sample.p95_ms >= sample.p50_ms
    assert sample.rps > 0 and sample.in_flight == 0
    assert sample.rss > 50 * 2**20 and sample.fds > 0
    assert sample.established >= 1 and sample.close_wait == 0
    assert sample.data["tcp"]["LISTEN"] == 1
    assert sample.data["server_pid"] in sample.data["pids"]
    assert sample.data["uptime"] > 0
    # The disk that holds its log, as the file system says (the runbook: a full one blocks writes).
    disk, fs = sample.data["log_disk"], os.statvfs(process.log_path(instance).parent)
    assert disk["total"] == fs.f_blocks * fs.f_frsize and 0 < disk["free"] <= disk["total"]
    assert disk["inodes_total"] == fs.f_files
    # Rotated by the console (INSTANCE_LOG_MAX_BYTES, INSTANCE_LOG_BACKUPS older files)
    assert sample.data["log_rotation"] == {"driver": "file", "max_bytes": 20 * 2**20, "files": 4}


@pytest.mark.django_db(transaction=True)
def test_an_instance_that_is_not_running_is_down_and_others_are_still_sampled(managed):
    process_instance("never-started", command=["/nonexistent"])
    up = managed("sample-b")
    ProcessRuntime().start(up)
    wait_http(up.base_url + "/health/ready", timeout=90)
    assert sampler.sample_host("local") == 2
    down = Sample.objects.get(instance__name="never-started")
    assert down.status == "down" and not down.probe_ok and down.data["detail"] == "not running"
    assert Sample.objects.get(instance=up).status == "ready"


def test_status_comes_from_the_runtime_then_the_health_probe():
    draining = Probe(ok=True, ms=1.0, health={"state": "draining"})
    assert sampler.derive_status(False, draining)[0] == "down"
    assert sampler.derive_status(True, Probe(ok=False, ms=None, error="refused")) == ("down", "refused")
    assert sampler.derive_status(True, draining)[0] == "draining"
    assert sampler.derive_status(True, Probe(ok=True, ms=1.0, health={})) == ("ready", "")


def test_gpu_processes_are_mapped_to_the_instance_by_pid(monkeypatch):
    # Fake NVML (CPU machine); the real path runs in tests/gpu on the GPU host.
    monkeypatch.setattr(sampler.gpu, "nvml_available", lambda: True)
    monkeypatch.setattr(
        sampler.gpu,
        "devices",
        lambda: [
            GpuDevice(0, "H100", 30 * 2**30, 80 * 2**30, 50, 60, 300.0),
            GpuDevice(1, "H100", 0, 80 * 2**30, 0, 40, 70.0),
        ],
    )
    monkeypatch.setattr(
        sampler.gpu,
        "processes",
        lambda: [GpuProcess(100, 0, 20 * 2**30), GpuProcess(200, 0, 10 * 2**30), GpuProcess(300, 1, 2**30)],
    )
    figures = sampler.gpu.Snapshot().for_instance([0], [100, 101])
    assert figures["gpu_used"] == 20 * 2**30 and figures["gpu_total"] == 80 * 2**30
    assert [d["index"] for d in figures["devices"]] == [0]
    assert figures["processes"] == [
        {"pid": 100, "gpu": 0, "used": 20 * 2**30, "ours": True},
        {"pid": 200, "gpu": 0, "used": 10 * 2**30, "ours": False},
    ]


def test_no_nvidia_gpu_is_reported_cleanly(monkeypatch):
    monkeypatch.setattr(sampler.gpu, "nvml_available", lambda: False)
    monkeypatch.setattr(sampler.gpu, "nvml_error", lambda: "no NVIDIA GPU (driver not loaded)")
    snapshot = sampler.gpu.Snapshot()
    assert snapshot.error == "no NVIDIA GPU (driver not loaded)"
    assert snapshot.for_instance([0], [1])["gpu_used"] is None


def test_a_dashboard_batch_goes_out_without_waiting_for_a_later_sample(monkeypatch):
    """The last samples of a round (or of a slow one) must not wait for another sample to come."""
    from console.telemetry import sampler

    sent: list[list[str]] = []
    monkeypatch.setattr(sampler.events, "publish_samples", lambda items: sent.append([i["instance"] for i in items]))
    batch = sampler.DashboardBatch(every=0.05)
    batch.add("a", {})
    batch.add("b", {})
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sent == [["a", "b"]]
    batch.add("c", {})
    batch.flush()  # the round's end: at once, and its timer with it
    time.sleep(0.2)
    assert sent == [["a", "b"], ["c"]]


def test_the_standby_is_kept_only_in_the_shape_the_console_shows():
    """/health is the server's answer, not trusted: the standby's state from a known few, numbers as
    numbers, why cut short; anything else is no standby."""
    health = {"standby": {"state": "ready", "pid": 7, "load_seconds": 0.61234, "extra": "x" * 10**6}}
    assert standby_of(health) == {"state": "ready", "pid": 7, "load_seconds": 0.61, "why": ""}
    odd = {"standby": {"state": "failed", "pid": "7", "load_seconds": True, "why": "no room " * 200}}
    assert standby_of(odd) == {
        "state": "failed",
        "pid": None,
        "load_seconds": None,
        "why": ("no room " * 200)[:300],
    }
    for answer in (None, [], {"standby": []}, {"standby": {"state": "<img src=x>"}}, {"standby": None}):
        assert standby_of(answer) is None


@pytest.mark.django_db
def test_figures_that_are_not_numbers_are_recorded_as_none_not_lost_with_the_sample():
    """Python's JSON reads NaN and Infinity from a server's /health; PostgreSQL's jsonb (and a
    browser's JSON.parse) refuse them. The sample is kept, without them."""
    health = json.loads(
        '{"uptime_seconds": NaN, "timings": {"p50_s": Infinity},'
        ' "supervisor": {"standby": {"state": "ready", "pid": 9, "load_seconds": NaN}}}'
    )
    instance = process_instance("not-numbers")
    sample = {
        "status": "ready",
        "p50_ms": health["timings"]["p50_s"],
        "data": {
            "uptime": health["uptime_seconds"],
            "standby": standby_of(health["supervisor"]),
            "deep": [{"x": -math.inf}, 1.5],
        },
    }
    row = sampler.record(instance, sample)
    row = Sample.objects.get(pk=row.pk)
    assert row.p50_ms is None and row.data["uptime"] is None and row.data["deep"] == [{"x": None}, 1.5]
    assert row.data["standby"] == {"state": "ready", "pid": 9, "load_seconds": None, "why": ""}
