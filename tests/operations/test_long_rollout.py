"""A rollout far longer than the broker's visibility timeout, on the production topology (real
Redis, a real worker process): each replica is restarted by exactly one operation, one at a time,
no message is delivered twice while its worker lives, and a worker killed mid-rollout is taken
over by the next one."""

import os
import re
import signal
import sys
import time

import pytest
from celery import Celery

from console.host.process import ProcessRuntime
from console.operations.models import Operation, Rollout
from console.operations.rollout import request_rollout
from tests.conftest import ROOT, celery_worker, free_port, redis_database, until, wait_http
from tests.factories import process_instance
from tests.operations.test_worker_loss import _database_url

pytestmark = pytest.mark.slow
VISIBILITY_TIMEOUT = 1
START_SECONDS = 6  # each replica takes this long to start, like a model loading


@pytest.fixture
def redis_url():
    url = redis_database(4)
    import redis

    redis.Redis.from_url(url).flushdb()
    return url


def replicas(count: int) -> list:
    made = []
    for n in range(count):
        port = free_port()
        made.append(
            process_instance(
                f"long-{n}",
                command=[sys.executable, "bench/health_stub.py", str(port), "0", str(START_SECONDS)],
                working_dir=str(ROOT),
                base_url=f"http://127.0.0.1:{port}",
                group="long",
                drain_timeout=1,
                stop_timeout=5,
            )
        )
    for instance in made:
        ProcessRuntime().start(instance)
    for instance in made:
        wait_http(instance.base_url + "/health/ready", timeout=30)
    return made


@pytest.mark.django_db(transaction=True)
def test_a_rollout_twenty_visibility_timeouts_long_restarts_each_replica_once(tmp_path, redis_url):
    instances = replicas(3)
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": _database_url(),
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        "CONSOLE_HEARTBEAT_STALE_SECONDS": "4",
    }
    logs = [tmp_path / "worker1.log", tmp_path / "worker2.log"]
    workers = [celery_worker("console,host.local", env, logs[0], "threads", 4, "-l", "INFO")]
    began = time.monotonic()
    try:
        rollout = request_rollout(instances, reason="longer than the visibility timeout")
        Celery(broker=redis_url, set_as_current=False).send_task(
            "console.operations.tasks.advance_rollout", args=[rollout.pk], queue="console"
        )

        # Kill the worker while the second replica loads; another worker takes over.
        def second_started():
            op = Operation.objects.filter(rollout=rollout, instance=instances[1]).first()
            return op and any(s["name"] == "start" and s["state"] == "done" for s in op.steps)

        until(second_started, timeout=90, every=0.1)
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].wait(10)
        workers.append(celery_worker("console,host.local", env, logs[1], "threads", 4, "-l", "INFO"))

        done = until(lambda: Rollout.objects.filter(pk=rollout.pk, state__in=["succeeded", "failed"]).first(), 180)
        took = time.monotonic() - began
        assert done.state == "succeeded", (done.results, logs[1].read_text()[-3000:])
        assert took >= 20 * VISIBILITY_TIMEOUT

        operations = [Operation.objects.get(rollout=rollout, instance=i) for i in instances]  # one each
        assert [op.state for op in operations] == ["succeeded"] * 3
        assert [op.attempts for op in operations] == [1, 2, 1]  # the killed worker's was taken over
        assert [s["name"] for s in operations[1].steps].count("resume") == 1
        for earlier, later in zip(operations, operations[1:], strict=False):
            assert earlier.finished <= later.started, "two replicas of the group were down at once"

        # No copy of a running operation's message: each delivered once (plus the takeover).
        received = "".join(log.read_text() for log in logs)
        run_messages = re.findall(r"Received task: console\.operations\.tasks\.run_operation\[([0-9a-f-]+)\]", received)
        assert len(run_messages) == len(set(run_messages)) <= 4, run_messages
        # Every rollout step was short: no worker thread waited for a restart.
        advances = [float(s) for s in re.findall(r"advance_rollout\[[0-9a-f-]+\] succeeded in ([0-9.]+)s", received)]
        assert advances and max(advances) < VISIBILITY_TIMEOUT, advances
        print(f"\nrollout of 3 replicas: {took:.1f} s ({took / VISIBILITY_TIMEOUT:.0f}x the visibility timeout)")
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(20)
        for instance in instances:
            ProcessRuntime().stop(instance, timeout=5)
