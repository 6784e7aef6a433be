"""The Docker Engine restarted in the middle of a restart operation.

The engine here is a private dockerd (its own data root, socket and containerd) so that
restarting it never touches the containers of the rest of the test run. Its instance is a
small server answering the inference contract's health endpoints (bench/health_stub.py) in
the Debian base image; as PID 1 it ignores SIGTERM, so `docker stop` waits for the stop timeout
and the engine goes down while the console is waiting on it.
"""

import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import docker
import httpx
import pytest

from console.instances.models import Host, Instance
from console.operations.models import Operation
from tests.conftest import ROOT, free_port
from tests.host.docker_images import base_image
from tests.host.test_docker_runtime import local_engine, run

pytestmark = pytest.mark.docker


class PrivateEngine:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="icd-"))  # short: the socket path has a length limit
        self.url = f"unix://{self.root}/docker.sock"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.root / "dockerd.log", "a")  # noqa: SIM115 (the daemon writes to it until stopped)
        self.proc = subprocess.Popen(
            [
                "dockerd",
                "--host",
                self.url,
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "docker.pid"),
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--shutdown-timeout=2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                docker.DockerClient(base_url=self.url, timeout=5).ping()
                return
            except docker.errors.DockerException:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError(f"the private dockerd did not start: {(self.root / 'dockerd.log').read_text()[-2000:]}")

    def stop(self) -> None:
        """As `systemctl restart docker` stops it: SIGTERM, the daemon stops its containers and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=30)

    def remove(self) -> None:
        self.stop()
        # dockerd leaves its default network namespace mounted under its exec root.
        with open("/proc/mounts") as mounts:
            points = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{self.root}/")]
        for point in sorted(points, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_engine():
    image = base_image(local_engine())
    engine = PrivateEngine()
    try:
        engine.start()
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", engine.url, "load", "-q"], stdin=save.stdout, check=True, capture_output=True)
        save.wait()
        yield engine, image
    finally:
        engine.remove()


def test_engine_restarted_mid_restart_ends_final_and_the_next_restart_recovers(db, private_engine):
    engine, image = private_engine
    port = free_port()
    name = f"ic-engine-{port}"
    instance = Instance.objects.create(
        name=name,
        host=Host.objects.create(name="private-engine", docker_url=engine.url),
        runtime=Instance.Runtime.DOCKER,
        container_name=name,
        image=image,
        base_url=f"http://127.0.0.1:{port}",
        run_spec={
            "network_mode": "host",
            "command": ["python3", "/stub/health_stub.py", str(port)],
            "volumes": [f"{ROOT / 'bench'}:/stub:ro"],
        },
        stop_timeout=15,
        drain_timeout=1,
        ready_timeout=30,
    )
    assert run(instance, "start").state == Operation.State.SUCCEEDED

    restarted = threading.Event()

    def restart_engine():
        time.sleep(2)  # the operation is in its stop step, waiting on the engine
        engine.stop()
        time.sleep(1)
        engine.start()
        restarted.set()

    chaos = threading.Thread(target=restart_engine)
    chaos.start()
    began = time.monotonic()
    operation = run(instance, "restart")
    chaos.join(120)
    assert restarted.is_set()
    print(
        f"\nengine restarted mid-operation: {operation.state} after {time.monotonic() - began:.1f} s: {operation.error}"
    )
    assert operation.state in (Operation.State.SUCCEEDED, Operation.State.FAILED)
    if operation.state == Operation.State.FAILED:
        assert "Docker" in operation.error, operation.error
    assert all(step["state"] != "running" for step in operation.steps), operation.steps

    # The console recovers by itself: the next restart works, with one container, serving.
    again = run(instance, "restart")
    assert again.state == Operation.State.SUCCEEDED, again.error
    containers = engine.client().containers.list(all=True, filters={"name": name})
    assert [c.name for c in containers] == [name]
    assert httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code == 200
    engine.client().containers.get(name).remove(force=True, v=True)
