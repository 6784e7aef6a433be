"""A worker killed mid-restart: the task is redelivered and the operation still finishes."""

import os
import signal
import subprocess
import time

import httpx
import pytest
from celery import Celery
from django.db import connection

from console.host.process import ProcessRuntime
from console.operations.models import Operation
from console.operations.pipeline import execute
from console.operations.request import request_operation
from tests.conftest import ServerProcess, celery_worker, redis_database
from tests.factories import process_instance


@pytest.fixture
def redis_url():
    url = redis_database(3)
    import redis

    redis.Redis.from_url(url).flushdb()
    return url


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail("this test shares its database with a worker process: run it on PostgreSQL (make test)")
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _start_worker(redis_url: str, log_path) -> subprocess.Popen:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": _database_url(),
        "CELERY_VISIBILITY_TIMEOUT": "3",  # redeliver quickly after the kill
        "CONSOLE_HEARTBEAT_STALE_SECONDS": "4",
    }
    return celery_worker("host.local", env, log_path, "solo", 1, "--without-heartbeat")


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_restart_is_redelivered_and_finishes(smoke_model, tmp_path, redis_url):
    server = ServerProcess(smoke_model, tmp_path)
    instance = process_instance("redeliver", server)
    start, _ = request_operation(instance, "start")
    execute(start.pk)
    old_pid = httpx.get(instance.base_url + "/health").json()["pid"]

    restart, _ = request_operation(instance, "restart", reason="worker loss test")
    Celery(broker=redis_url, set_as_current=False).send_task(
        "console.operations.tasks.run_operation", args=[restart.pk], queue="host.local"
    )
    workers = [_start_worker(redis_url, tmp_path / "worker1.log")]
    try:
        # Kill the worker once the old server is gone and the new one is loading.
        _wait(
            lambda: any(
                s["name"] == "start" and s["state"] == "done" for s in Operation.objects.get(pk=restart.pk).steps
            ),
            60,
            "the start step",
        )
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].wait(10)
        assert Operation.objects.get(pk=restart.pk).state == "running"

        workers.append(_start_worker(redis_url, tmp_path / "worker2.log"))
        finished = _wait(
            lambda: Operation.objects.filter(pk=restart.pk).exclude(state="running").first(),
            90,
            "the redelivered operation to finish",
        )
        assert finished.state == "succeeded", (finished.error, (tmp_path / "worker2.log").read_text()[-3000:])
        assert finished.attempts == 2
        names = [s["name"] for s in finished.steps]
        assert names.count("resume") == 1
        assert names[-1] == "verify"
        health = httpx.get(instance.base_url + "/health").json()
        assert health["state"] == "ready" and health["pid"] != old_pid
        assert len(ProcessRuntime().status(instance).pids) == 1  # one server, not two
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(20)
        ProcessRuntime().stop(instance, timeout=5)


@pytest.mark.django_db
def test_redelivery_while_the_first_worker_lives_waits_its_turn():
    from datetime import timedelta

    from django.utils import timezone

    from console.operations.pipeline import Busy, claim

    instance = process_instance("busy", command=["true"])
    operation, _ = request_operation(instance, "restart")
    assert claim(operation.pk).attempts == 1
    with pytest.raises(Busy):
        claim(operation.pk)  # its worker's heartbeat is fresh
    Operation.objects.filter(pk=operation.pk).update(heartbeat=timezone.now() - timedelta(minutes=5))
    assert claim(operation.pk).attempts == 2  # a silent worker is taken over
