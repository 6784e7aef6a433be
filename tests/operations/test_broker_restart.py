"""Redis restarted during an operation: the operation still ends in a final state, the worker
reconnects, and an operation whose message was lost with the broker is sent again."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from celery import Celery
from django.utils import timezone

from console.host.process import ProcessRuntime
from console.operations.models import Operation
from console.operations.request import request_operation
from tests.conftest import ROOT, ServerProcess, celery_worker, free_port
from tests.factories import process_instance
from tests.operations.test_worker_loss import _database_url, _wait

pytestmark = pytest.mark.slow


class Redis:
    """A Redis of this test's own (no persistence: a restart loses every message)."""

    def __init__(self, tmp):
        self.port, self.tmp, self.proc = free_port(), tmp, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(
            lambda: subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).returncode == 0,
            10,
            "redis",
        )
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def worker(redis_url: str, log_path) -> subprocess.Popen:
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": _database_url()}
    return celery_worker("host.local", env, log_path)


def send(redis_url: str, operation: Operation) -> None:
    Celery(broker=redis_url, set_as_current=False).send_task(
        "console.operations.tasks.run_operation", args=[operation.pk], queue="host.local"
    )


def finished(pk: int, timeout: float) -> Operation:
    return _wait(
        lambda: Operation.objects.filter(pk=pk).exclude(state__in=["queued", "running"]).first(),
        timeout,
        f"operation {pk} to finish",
    )


@pytest.mark.django_db(transaction=True)
def test_operations_survive_a_redis_restart(smoke_model, tmp_path):
    redis = Redis(tmp_path).start()
    instance = process_instance("broker-restart", ServerProcess(smoke_model, tmp_path))
    proc = worker(redis.url, tmp_path / "worker.log")
    try:
        start, _ = request_operation(instance, "start")
        send(redis.url, start)
        assert finished(start.pk, 90).state == "succeeded"

        restart, _ = request_operation(instance, "restart", reason="broker restart test")
        send(redis.url, restart)
        _wait(lambda: any(s["name"] == "start" for s in Operation.objects.get(pk=restart.pk).steps), 60, "start step")
        redis.stop()  # mid-operation; the queue and the unacked message are gone with it
        time.sleep(2)
        redis.start()
        done = finished(restart.pk, 90)
        assert done.state == "succeeded", (done.error, (tmp_path / "worker.log").read_text()[-3000:])

        # The worker reconnected: a new operation runs.
        stop, _ = request_operation(instance, "soft_reset")
        send(redis.url, stop)
        assert finished(stop.pk, 60).state in ("succeeded", "failed")  # soft reset on CPU may be refused: final

        # A message lost with the broker: the periodic recovery sends it again.
        lost, _ = request_operation(instance, "stop", reason="lost message")
        Operation.objects.filter(pk=lost.pk).update(created=timezone.now() - timedelta(seconds=90))
        # The recovery task, as beat runs it: in a process of its own, on this Redis.
        recovery = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                "from console.operations.recovery import recover; print('failed:', recover()['failed'])",
            ],
            cwd=ROOT,
            env={**os.environ, "REDIS_URL": redis.url, "DATABASE_URL": _database_url()},
            capture_output=True,
            text=True,
            check=True,
        )
        assert "failed: []" in recovery.stdout  # not failed: sent again
        assert finished(lost.pk, 60).state == "succeeded"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        redis.stop()
        ProcessRuntime().stop(instance, timeout=5)
