"""The hostile "model server" (programs/hostile_health.py) the host's tests start in its modes."""

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

PROGRAM = Path(__file__).parent / "programs" / "hostile_health.py"


@pytest.fixture
def hostile():
    """Start the program in a mode; its URL. Stopped after the test."""
    started = []

    def start(mode: str) -> str:
        port = free_port()
        process = subprocess.Popen([sys.executable, str(PROGRAM), str(port), mode])
        started.append(process)
        return listening(port)

    yield start
    for process in started:
        process.kill()
        process.wait()


def listening(port: int) -> str:
    """The program's URL once it takes connections."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{PROGRAM.name} did not listen on {port}")


def sampled(name: str, mode: str, seconds: float = 60):
    """An instance running the program in `mode`, sampled by one round of host "local" on a thread
    given `seconds` to end (it closes its database connection): its sample, or the test fails."""
    from django.db import connection

    from console.host.process import ProcessRuntime
    from console.telemetry import sampler
    from console.telemetry.models import Sample
    from tests.factories import process_instance

    port = free_port()
    instance = process_instance(
        name, command=[sys.executable, str(PROGRAM), str(port), mode], base_url=f"http://127.0.0.1:{port}"
    )
    done = []

    def round_() -> None:
        try:
            done.append(sampler.sample_host("local"))
        finally:
            connection.close()

    ProcessRuntime().start(instance)
    try:
        listening(port)
        thread = threading.Thread(target=round_, daemon=True)
        thread.start()
        thread.join(seconds)
        assert done, f"the round had not ended after {seconds:g} s"
    finally:
        ProcessRuntime().stop(instance, timeout=5)
    return Sample.objects.get(instance=instance)
