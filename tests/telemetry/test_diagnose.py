"""The checklist's verdicts on sample histories that look like each cause."""

import pytest

from console.telemetry.diagnose import diagnose
from console.telemetry.models import Sample
from tests.factories import GiB, process_instance
from tests.factories import sample_history as history


@pytest.fixture
def instance(db):
    return process_instance("diag-a", command=["true"])


def verdict(instance):
    result = diagnose(instance)
    return result.verdict, {f.rule: f.level for f in result.findings}


def test_no_samples_says_so(instance):
    assert diagnose(instance).verdict == "no_data"


def test_healthy(instance):
    history(instance)
    assert verdict(instance) == (
        "healthy",
        {"gpu_memory": "ok", "processes": "ok", "connections": "ok", "log_tail": "ok", "latency": "ok"},
    )


def test_slow_with_room_and_a_clean_log_is_soft_decay(instance):
    history(instance, p95_ms=lambda i: 100.0 if i < 5 else 400.0)
    found, levels = verdict(instance)
    assert found == "soft_decay" and levels["latency"] == "warn"
    assert "restart is recommended" in diagnose(instance).advice


def test_close_wait_pile_up_is_a_connection_leak(instance):
    history(instance, close_wait=lambda i: i * 10)
    assert verdict(instance)[0] == "connection_leak"


def test_full_memory_with_oom_in_the_log_is_memory_pressure(instance):
    history(
        instance,
        gpu_used=79 * GiB,
        data=lambda i: {"uptime": 100 + i, "pids": [10], "server_pid": 10, "signatures": {"cuda_oom": 1}},
    )
    found, levels = verdict(instance)
    assert found == "memory_pressure" and levels["gpu_memory"] == "bad" and levels["log_tail"] == "bad"


def test_a_stray_server_on_the_port_or_gpu_is_a_duplicate(instance):
    history(
        instance,
        data={
            "uptime": 50,
            "pids": [10],
            "server_pid": 99,
            "tcp": {"LISTEN": 2},
            "gpu": {"processes": [{"pid": 77, "gpu": 0, "used": 5 * GiB, "ours": False}]},
        },
    )
    result = diagnose(instance)
    assert result.verdict == "duplicates"
    evidence = " ".join(next(f for f in result.findings if f.rule == "processes").evidence)
    assert "pid 77" in evidence and "2 sockets" in evidence and "pid 99" in evidence


def test_down_wins(instance):
    history(instance, status=lambda i: "ready" if i < 9 else "down")
    assert verdict(instance)[0] == "down"


def test_host_memory_growing_in_a_settled_process_is_soft_decay(instance):
    history(instance, rss=lambda i: (1 + i) * GiB // 2)  # 0.5 GiB to 5 GiB in an hour-old process
    found, levels = verdict(instance)
    assert found == "soft_decay" and levels["host_memory"] == "warn"


def test_host_memory_of_a_process_warming_up_or_of_the_one_before_is_not_judged(instance):
    def data(i: int) -> dict:
        # Samples 0-4: an older process at 6 GiB; 5-9: a new one, growing in its first minute.
        return {"uptime": 5 * i if i >= 5 else 3600, "pids": [10 + (i >= 5)], "server_pid": 10 + (i >= 5)}

    history(instance, rss=lambda i: 6 * GiB if i < 5 else (i - 4) * GiB // 4, data=data)
    found, levels = verdict(instance)
    assert "host_memory" not in levels and found == "healthy", (found, levels)


def test_the_disk_that_holds_the_log_nearly_full_or_out_of_inodes_is_said_before_decay(instance):
    """The runbook: a log never rotated fills its disk or its inodes until the server blocks on a write,
    which no restart frees. Judged on the latest sample; unknown (a container's) says nothing."""

    def disk(free, inodes_free=500_000, inodes_total=1_000_000):
        return lambda i: {
            "uptime": 3600 + i * 5,
            "pids": [10],
            "server_pid": 10,
            "log_disk": {"free": free, "total": 100 * GiB, "inodes_free": inodes_free, "inodes_total": inodes_total},
        }

    history(instance, p95_ms=lambda i: 100.0 if i < 7 else 400.0, data=disk(3 * GiB))  # slow, too
    result = diagnose(instance)
    found = {f.rule: f for f in result.findings}
    assert result.verdict == "disk_full" and found["log_disk"].level == "bad"
    assert found["log_disk"].evidence == ["3.0 GiB free of 100.0 GiB", "50.0% of its inodes free"]
    assert "restart frees nothing" in result.advice

    Sample.objects.all().delete()
    history(instance, data=disk(50 * GiB, inodes_free=30_000))  # room, but 3 % of the inodes
    assert verdict(instance) == ("disk_full", {**verdict(instance)[1], "log_disk": "bad"})
    Sample.objects.all().delete()
    history(instance, data=disk(10 * GiB))
    assert verdict(instance)[1]["log_disk"] == "warn" and verdict(instance)[0] == "watch"
    Sample.objects.all().delete()
    history(instance, data=disk(50 * GiB, inodes_free=0, inodes_total=0))  # btrfs: no fixed inode count
    assert verdict(instance)[1]["log_disk"] == "ok"
    for unknown in (None, {"free": "lots", "total": 1}, {"free": 1, "total": 0}, ["x"]):
        Sample.objects.all().delete()
        history(instance, data={"uptime": 3600, "pids": [10], "server_pid": 10, "log_disk": unknown})
        assert "log_disk" not in verdict(instance)[1], unknown


def test_a_log_never_rotated_is_to_watch_and_says_how_to_rotate_it(instance):
    """The runbook's logrotate: a container created before the console's log limits (or by another
    tool) keeps Docker's default json-file log, which grows until the disk is full; a restart does not
    change it, a new container does."""

    def kept(rotation):
        Sample.objects.all().delete()
        history(instance, data={"uptime": 3600, "pids": [10], "server_pid": 10, "log_rotation": rotation})
        result = diagnose(instance)
        return result, next((f for f in result.findings if f.rule == "log_rotation"), None)

    result, row = kept({"driver": "json-file", "max_bytes": None, "files": 1})
    assert row.level == "warn" and result.verdict == "watch"
    assert "never rotated" in result.advice and "recreate" in row.evidence[0]
    result, row = kept({"driver": "file", "max_bytes": None, "files": 4})
    assert row.level == "warn" and "INSTANCE_LOG_MAX_BYTES is 0" in row.evidence[0]
    result, row = kept({"driver": "json-file", "max_bytes": 20 * 2**20, "files": 4})
    assert (row.level, row.evidence, result.verdict) == ("ok", ["json-file, at most 4 files of 20.0 MiB"], "healthy")
    for other in ("journald", "none"):
        result, row = kept({"driver": other, "max_bytes": None, "files": None})
        assert row.level == "ok" and result.verdict == "healthy", other
    for unknown in (None, "json-file", {"driver": 3}, {"driver": "json-file", "max_bytes": "lots"}):
        assert kept(unknown)[1] is None, unknown


def test_rows_off_without_a_pattern_a_restart_cures_are_to_watch_not_healthy(instance):
    """GPU memory nearly full with a clean log and latency at its baseline (a server that reserves most
    of the card, or one on its way to trouble): not "nothing points to a problem"."""
    history(instance, gpu_used=78 * GiB)
    result = diagnose(instance)
    assert result.verdict == "watch" and "GPU memory is nearly full." in result.advice
    assert {f.rule: f.level for f in result.findings}["latency"] == "ok"
