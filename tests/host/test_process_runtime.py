"""The local supervisor: process groups, SIGKILL fallback, re-adoption, no killing by name."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from console.host import process
from console.host.process import ProcessRuntime, rotate_log
from tests.factories import process_instance

IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"
)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_line(instance, text: str, timeout: float = 10) -> None:
    import time

    deadline = time.monotonic() + timeout
    while text not in "\n".join(ProcessRuntime().log_tail(instance)):
        assert time.monotonic() < deadline, f"{instance.name} never printed {text!r}"
        time.sleep(0.05)


@pytest.mark.django_db
def test_stubborn_process_is_killed_after_the_timeout():
    instance = process_instance("stubborn", command=[sys.executable, "-c", IGNORES_TERM])
    runtime = ProcessRuntime()
    runtime.start(instance)
    _wait_for_line(instance, "up")  # its SIGTERM handler is installed
    result = runtime.stop(instance, timeout=1)
    assert result.forced and "killed" in result.detail
    assert not runtime.status(instance).running


@pytest.mark.django_db
def test_children_of_the_server_are_stopped_too():
    spawn_child = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"
    )
    instance = process_instance("parent", command=[sys.executable, "-c", spawn_child])
    runtime = ProcessRuntime()
    runtime.start(instance)
    import time

    deadline = time.monotonic() + 10
    while len(runtime.status(instance).pids) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = runtime.status(instance).pids
    assert len(pids) == 2
    runtime.stop(instance, timeout=5)
    assert not any(_alive(pid) for pid in pids)


PROGRAMS = Path(__file__).parent / "programs"


@pytest.mark.django_db
def test_sigterm_goes_to_the_main_process_which_shuts_its_children_down():
    program = PROGRAMS / "shuts_down_its_child.py"
    instance = process_instance("leader", command=[sys.executable, str(program)])
    runtime = ProcessRuntime()
    runtime.start(instance)
    _wait_for_line(instance, "child up")
    _wait_for_line(instance, "main up")
    result = runtime.stop(instance, timeout=10)
    log = "\n".join(runtime.log_tail(instance))
    assert "child: finished its work" in log and "aborted" not in log, log
    assert not result.forced and not runtime.status(instance).running


@pytest.mark.django_db
def test_what_is_left_of_the_group_gets_sigterm_once_the_main_process_has_ended():
    instance = process_instance("orphaning", command=[sys.executable, str(PROGRAMS / "leaves_a_child.py")])
    runtime = ProcessRuntime()
    runtime.start(instance)
    _wait_for_line(instance, "child up")
    _wait_for_line(instance, "main up")
    pids = runtime.status(instance).pids
    result = runtime.stop(instance, timeout=30)
    assert not result.forced and result.seconds < 10, result  # not left until the stop timeout
    assert not any(_alive(pid) for pid in pids)


@pytest.mark.django_db
def test_running_instance_is_readopted_after_a_console_restart():
    instance = process_instance("adopt", command=[sys.executable, "-c", "import time; time.sleep(600)"])
    ProcessRuntime().start(instance)
    process._children.clear()  # what a fresh console process knows: only the pid file
    status = ProcessRuntime().status(instance)
    assert status.running
    assert ProcessRuntime().stop(instance, timeout=5).forced is False
    assert not ProcessRuntime().status(instance).running


@pytest.mark.django_db
def test_an_unrelated_process_with_the_same_command_is_never_touched():
    command = [sys.executable, "-c", "import time; time.sleep(600)"]
    bystander = subprocess.Popen(command)
    try:
        instance = process_instance("twin", command=command)
        runtime = ProcessRuntime()
        runtime.start(instance)
        runtime.stop(instance, timeout=5)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.django_db
@pytest.mark.parametrize("started", [{"start_ticks": 12345}, {"start_time": 12345.0}], ids=["ticks", "older-console"])
def test_stale_pid_file_of_a_recycled_pid_is_not_running(started):
    instance = process_instance("stale", command=["true"])
    path = process.instance_dir(instance) / "pid.json"
    # pid 1 exists but started at another time: not our instance.
    path.write_text(json.dumps({"pid": 1, "pgid": 999999, **started}))
    assert not ProcessRuntime().status(instance).running


@pytest.mark.django_db
def test_a_clock_step_leaves_a_running_instance_running_and_stoppable(monkeypatch):
    """A stepped clock (NTP, a resumed virtual machine) moves the boot time the kernel reports
    (/proc/stat btime), so every epoch start time computed from it moves too: an instance compared
    by one looked stopped, and a stop said "was not running" and left it serving. Stepping this
    machine's clock would disturb everything else on it, so the boot time psutil reads moves."""
    import psutil

    instance = process_instance("stepped", command=[sys.executable, "-c", "import time; time.sleep(600)"])
    runtime = ProcessRuntime()
    runtime.start(instance)
    pid = runtime.status(instance).pids[0]
    booted, began = psutil.boot_time(), psutil.Process(pid).create_time()
    monkeypatch.setattr(psutil._psplatform, "boot_time", lambda: booted + 5)
    assert psutil.Process(pid).create_time() == pytest.approx(began + 5)  # what a step does to epoch times
    status = runtime.status(instance)
    assert status.running and status.pids == [pid], status
    result = runtime.stop(instance, timeout=5)
    assert "after SIGTERM" in result.detail and not _alive(pid)


@pytest.mark.django_db
def test_a_pid_file_of_an_older_console_is_read_by_its_epoch_start_time():
    """Pid files written before start ticks were kept name the process by its epoch start time:
    an instance running across the console's upgrade is still its own, and still stops."""
    import psutil

    instance = process_instance("upgraded", command=[sys.executable, "-c", "import time; time.sleep(600)"])
    runtime = ProcessRuntime()
    runtime.start(instance)
    path = process.instance_dir(instance) / "pid.json"
    record = json.loads(path.read_text())
    pid = record["pid"]
    older = {"pid": pid, "pgid": pid, "start_time": psutil.Process(pid).create_time(), "started": record["started"]}
    path.write_text(json.dumps(older))
    assert runtime.status(instance).pids == [pid]
    assert json.loads(path.read_text())["start_ticks"] == record["start_ticks"]  # read once, kept
    assert "after SIGTERM" in runtime.stop(instance, timeout=5).detail and not _alive(pid)


def test_log_rotation_keeps_the_writer_appending(tmp_path):
    log = tmp_path / "server.log"
    writer = open(log, "ab")
    writer.write(b"x" * 2000)
    writer.flush()
    assert rotate_log(log, max_bytes=1000, backups=2)
    writer.write(b"after\n")
    writer.flush()
    writer.close()
    assert (tmp_path / "server.log.1").stat().st_size == 2000
    assert log.read_bytes().endswith(b"after\n") and log.stat().st_size < 2000


@pytest.mark.django_db
def test_a_pid_reused_by_a_stranger_is_never_signalled():
    """The recorded leader's pid now belongs to another process (another start time): neither it nor
    its group is the instance's, whatever the pid file says."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        instance = process_instance("reused", command=["true"])
        record = {"pid": stranger.pid, "pgid": stranger.pid, "start_ticks": 1, "started": 0}
        process._pid_path(instance).write_text(json.dumps(record))
        runtime = ProcessRuntime()
        status = runtime.status(instance)
        assert not status.running and status.pids == []
        assert runtime.stop(instance, timeout=1).detail == "was not running"
        assert stranger.poll() is None  # alive: never signalled
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.django_db
def test_a_rounds_process_table_gives_the_group_a_fresh_read_gives():
    instance = process_instance("grouped", command=["sh", "-c", "sleep 60 & sleep 60 & wait"])
    runtime = ProcessRuntime()
    runtime.start(instance)
    try:
        import time

        deadline = time.monotonic() + 10
        while len(runtime.status(instance).pids) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        fresh = runtime.status(instance)
        shared = runtime.status(instance, process.ProcessGroups())
        assert len(fresh.pids) == 3 and shared.pids == fresh.pids and shared.running
    finally:
        runtime.stop(instance, timeout=5)
    assert runtime.status(instance, process.ProcessGroups()).pids == []
