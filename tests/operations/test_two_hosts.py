"""Two hosts on one machine, on the production topology: each host has its own Docker Engine (a
private dockerd: its own socket and data root) and its own worker process on its own queue, over
PostgreSQL and Redis. An operation on a host's instance runs on that host's worker and reaches that
host's engine only; each host's report comes from its own worker; a rollout of a group spread over
both restarts each replica on its own host, one at a time; an operation for a host whose worker is
down waits in its queue, and runs once when the worker is back."""

import os
import signal
import subprocess
import time

import httpx
import pytest
from celery import Celery

from console.instances.models import Host, Instance
from console.operations.models import Operation, Rollout
from console.operations.request import request_operation
from console.operations.rollout import request_rollout
from tests.conftest import ROOT, celery_worker, free_port, until
from tests.host.docker_images import base_image
from tests.host.test_docker_runtime import local_engine
from tests.host.test_engine_restart import PrivateEngine
from tests.operations.test_long_rollout import redis_url  # noqa: F401 (a fixture)
from tests.operations.test_worker_loss import _database_url

pytestmark = [pytest.mark.docker, pytest.mark.slow]
HOSTS = ("gpu-a", "gpu-b")


@pytest.fixture
def engines():
    """One private Docker Engine per host, each with the base image."""
    image = base_image(local_engine())
    made = {name: PrivateEngine() for name in HOSTS}
    try:
        for engine in made.values():
            engine.start()
            save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
            subprocess.run(
                ["docker", "-H", engine.url, "load", "-q"], stdin=save.stdout, check=True, capture_output=True
            )
            save.wait()
        yield made, image
    finally:
        for engine in made.values():
            engine.remove()


def _instance(host: Host, image: str) -> Instance:
    port = free_port()
    return Instance.objects.create(
        name=f"{host.name}-1",
        host=host,
        runtime=Instance.Runtime.DOCKER,
        container_name=f"ic-{host.name}-{port}",
        image=image,
        base_url=f"http://127.0.0.1:{port}",
        group="spread",
        run_spec={
            "network_mode": "host",
            "command": ["python3", "/stub/health_stub.py", str(port)],
            "volumes": [f"{ROOT / 'bench'}:/stub:ro"],
        },
        stop_timeout=10,
        drain_timeout=1,
        ready_timeout=30,
    )


def _names_in_events(engine: PrivateEngine, since: float) -> set[str]:
    """Every container name the engine's events mention since `since` (what reached that engine)."""
    events = engine.client().events(since=int(since), until=int(time.time()) + 1, decode=True)
    return {e.get("Actor", {}).get("Attributes", {}).get("name") for e in events if e.get("Type") == "container"}


@pytest.mark.django_db(transaction=True)
def test_each_host_worker_runs_its_own_hosts_work_only(engines, redis_url, tmp_path):  # noqa: F811
    engine_of, image = engines
    hosts = {name: Host.objects.create(name=name, docker_url=engine_of[name].url) for name in HOSTS}
    instances = {name: _instance(hosts[name], image) for name in HOSTS}
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": _database_url(),
        "CONSOLE_HEARTBEAT_STALE_SECONDS": "4",
    }
    broker = Celery(broker=redis_url, set_as_current=False)

    def worker(name: str, queues: str) -> subprocess.Popen:
        return celery_worker(queues, {**env, "CONSOLE_HOST_NAME": name}, tmp_path / f"{name}.log", "threads", 4)

    def send(operation: Operation) -> None:
        broker.send_task(
            "console.operations.tasks.run_operation", args=[operation.pk], queue=operation.instance.host.queue
        )

    def finished(operation: Operation) -> Operation:
        return until(lambda: Operation.objects.filter(pk=operation.pk, finished__isnull=False).first(), 90, 0.2)

    began = time.time()
    workers = {"gpu-a": worker("gpu-a", "host.gpu-a"), "gpu-b": worker("gpu-b", "console,host.gpu-b")}
    try:
        # Each instance started by its own host's worker, in its own engine.
        starts = {name: request_operation(instances[name], "start", reason="two hosts")[0] for name in HOSTS}
        for operation in starts.values():
            send(operation)
        for name, operation in starts.items():
            done = finished(operation)
            assert done.state == Operation.State.SUCCEEDED, done.error
            assert done.worker.startswith(f"{name} ("), done.worker
        for name in HOSTS:
            other = HOSTS[1 - HOSTS.index(name)]
            assert _names_in_events(engine_of[name], began) == {instances[name].container_name}
            assert not engine_of[name].client().containers.list(all=True, filters={"name": instances[other].name})

        # Each host's report comes from its own worker.
        broker.send_task("console.telemetry.tasks.sample_all", queue="console")
        reported = until(lambda: all(h.seen_at for h in Host.objects.filter(name__in=HOSTS)), 30, 0.2)
        assert reported
        for name in HOSTS:
            host = Host.objects.get(name=name)
            assert host.reported_by.startswith(f"{name} ("), host.reported_by
            assert instances[name].samples.filter(status="ready").exists()

        # A rollout of the group spread over both: each replica restarted on its own host, in turn.
        started_at = {
            name: engine_of[name].client().containers.get(instances[name].container_name).attrs["State"]["StartedAt"]
            for name in HOSTS
        }
        rollout = request_rollout(list(instances.values()), reason="spread")
        broker.send_task("console.operations.tasks.advance_rollout", args=[rollout.pk], queue="console")
        until(lambda: Rollout.objects.get(pk=rollout.pk).state == Rollout.State.SUCCEEDED, 120, 0.5)
        restarts = list(Operation.objects.filter(rollout=rollout).select_related("instance__host").order_by("started"))
        assert [op.instance.host.name for op in restarts] == list(HOSTS)
        assert all(op.state == Operation.State.SUCCEEDED and op.attempts == 1 for op in restarts)
        assert restarts[0].finished <= restarts[1].started  # one at a time
        for op in restarts:
            assert op.worker.startswith(f"{op.instance.host.name} ("), op.worker
            name = op.instance.host.name
            now = engine_of[name].client().containers.get(instances[name].container_name).attrs["State"]["StartedAt"]
            assert now != started_at[name]

        # gpu-a's worker stops: its operation waits in its queue, then runs once when it is back.
        workers["gpu-a"].send_signal(signal.SIGTERM)
        workers["gpu-a"].wait(30)
        waiting, _ = request_operation(instances["gpu-a"], "restart", reason="while its worker is away")
        send(waiting)
        time.sleep(3)
        assert Operation.objects.get(pk=waiting.pk).state == Operation.State.QUEUED
        workers["gpu-a"] = worker("gpu-a", "host.gpu-a")
        done = finished(waiting)
        assert done.state == Operation.State.SUCCEEDED and done.attempts == 1, done.error
        assert httpx.get(instances["gpu-a"].base_url + "/health/ready", timeout=5).status_code == 200
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in workers.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for name in HOSTS:
            for container in engine_of[name].client().containers.list(all=True):
                container.remove(force=True, v=True)
