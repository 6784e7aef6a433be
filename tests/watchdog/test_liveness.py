"""A model process that dies right after a good start is restarted at once: the start-up grace is
for a server that is starting, not for one that was ready and is gone."""

import os
import signal
import time

import pytest

from console.host.process import ProcessRuntime
from console.operations.models import Operation
from console.operations.request import request_operation
from console.telemetry.models import Sample
from console.telemetry.sampler import sample_host
from console.watchdog.models import Watchdog
from tests.conftest import until, wait_http

pytestmark = pytest.mark.slow


def test_a_server_killed_after_its_restart_is_restarted_within_its_probe_threshold(managed, worker):
    instance = managed("crash-after-start")
    Watchdog.objects.create(instance=instance, liveness_failures=3, startup_grace_seconds=180)
    started, _ = request_operation(instance, Operation.Kind.START, reason="test")
    until(lambda: Operation.objects.get(pk=started.pk).is_finished, timeout=90, every=0.3)
    assert Operation.objects.get(pk=started.pk).state == "succeeded"
    sample_host("local")
    assert Sample.objects.filter(instance=instance).latest("at").status == "ready"

    time.sleep(3)  # well inside the 180 s grace after the start
    for pid in ProcessRuntime().status(instance).pids:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    rounds = []

    def another_round():
        rounds.append(sample_host("local"))
        time.sleep(0.5)

    healing = until(
        lambda: Operation.objects.filter(instance=instance, trigger="watchdog").first(),
        timeout=30,
        every=0.1,
        between=another_round,
    )
    assert healing.options["rule"] == "liveness" and healing.kind == "restart"
    assert len(rounds) <= 5, f"{len(rounds)} sampling rounds before the watchdog acted"
    print(f"\nkilled -> watchdog restart requested: {time.monotonic() - killed:.1f} s, {len(rounds)} rounds")
    until(lambda: Operation.objects.get(pk=healing.pk).is_finished, timeout=90, every=0.3)
    assert Operation.objects.get(pk=healing.pk).state == "succeeded"
    wait_http(instance.base_url + "/health/ready", timeout=10)
