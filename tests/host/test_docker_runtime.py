"""The Docker runtime and the restart pipeline against a real Docker Engine and the real server image."""

import secrets

import docker
import httpx
import pytest

from console.host.docker import INSTANCE_LABEL, MANAGED_LABEL, DockerRuntime, docker_size
from console.instances.models import Host, Instance
from console.operations.models import Operation
from console.operations.pipeline import execute
from console.operations.request import request_operation
from tests.conftest import free_port
from tests.host.docker_images import base_image, inference_image

pytestmark = pytest.mark.docker


def local_engine() -> docker.DockerClient:
    """The test run's Docker Engine, or a failure saying how to get one."""
    client = docker.from_env()
    try:
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker Engine ({exc}): make test starts dockerd")
    return client


@pytest.fixture(scope="module")
def engine():
    return local_engine()


@pytest.fixture(scope="module")
def image(engine):
    return inference_image(engine)


@pytest.fixture
def container_instance(db, engine, image, smoke_model):
    names = []

    def make(**fields) -> Instance:
        port = free_port()
        name = f"ic-test-{secrets.token_hex(3)}"
        names.append(name)
        values = {
            "host": Host.objects.get_or_create(name="local")[0],
            "runtime": Instance.Runtime.DOCKER,
            "container_name": name,
            "image": image,
            "base_url": f"http://127.0.0.1:{port}",
            "admin_token": "docker-test-token",
            "run_spec": {
                "network_mode": "host",
                "volumes": [f"{smoke_model}:/models/smoke:ro"],
                "environment": {
                    "MODEL_PATH": "/models/smoke",
                    "PORT": str(port),
                    "HOST": "127.0.0.1",
                    "ADMIN_TOKEN": "docker-test-token",
                },
            },
            "ready_timeout": 120,
            "stop_timeout": 20,
            "drain_timeout": 5,
        }
        values.update(fields)
        return Instance.objects.create(name=name, **values)

    yield make
    for name in names:
        try:
            engine.containers.get(name).remove(force=True, v=True)
        except docker.errors.NotFound:
            pass


def run(instance, kind: str, **options) -> Operation:
    operation, _ = request_operation(instance, kind, reason="docker test", options=options)
    execute(operation.pk)
    operation.refresh_from_db()
    return operation


def test_container_start_restart_recreate_stop(engine, container_instance):
    instance = container_instance()
    started = run(instance, "start")
    assert started.state == "succeeded", (started.error, started.log_tail)
    container = engine.containers.get(instance.container_name)
    assert container.labels[MANAGED_LABEL] == "true" and container.labels[INSTANCE_LABEL] == instance.name
    # Its log rotated like a local process's (Docker's json-file keeps everything by default).
    assert container.attrs["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": str(20 * 2**20), "max-file": "4", "compress": "true"},
    }
    kept = DockerRuntime(engine).status(instance).log_rotation
    assert kept == {"driver": "json-file", "max_bytes": 20 * 2**20, "files": 4}
    assert httpx.get(instance.base_url + "/health").json()["state"] == "ready"
    first_start = container.attrs["State"]["StartedAt"]

    restarted = run(instance, "restart")
    assert restarted.state == "succeeded", (restarted.error, restarted.log_tail)
    assert "after SIGTERM" in restarted.steps[1]["detail"]  # drained and exited, not killed
    container.reload()
    assert container.attrs["State"]["StartedAt"] != first_start
    print(f"\nrestart-to-ready (docker runtime, smoke model): {restarted.duration:.2f} s")

    # The image runs the server under inference.supervisor: in place, the container keeps running
    # and only its model process is new.
    instance.restart_in_place = True
    instance.save()
    started_at = container.attrs["State"]["StartedAt"]
    old_pid = httpx.get(instance.base_url + "/health").json()["pid"]
    in_place = run(instance, "restart")
    assert in_place.state == "succeeded", (in_place.error, in_place.log_tail)
    assert [s["name"] for s in in_place.steps] == ["drain", "restart in place", "ready", "verify"]
    assert "replaced by" in in_place.steps[1]["detail"]
    container.reload()
    assert container.attrs["State"]["StartedAt"] == started_at
    assert httpx.get(instance.base_url + "/health").json()["pid"] != old_pid
    print(f"restart in place (docker runtime, smoke model): {in_place.duration:.2f} s")

    old_id = container.id
    # The image declares VOLUME /models and the spec mounts below it: Docker gave the container an
    # anonymous volume, which must not outlive it.
    anonymous = [m["Name"] for m in container.attrs["Mounts"] if m["Type"] == "volume"]
    assert anonymous
    recreated = run(instance, "restart", recreate=True)
    assert recreated.state == "succeeded", recreated.error
    assert [s["name"] for s in recreated.steps][:4] == ["drain", "stop", "release", "start"]  # never in place
    assert engine.containers.get(instance.container_name).id != old_id
    for name in anonymous:
        with pytest.raises(docker.errors.NotFound):
            engine.volumes.get(name)

    stopped = run(instance, "stop")
    assert stopped.state == "succeeded"
    container = engine.containers.get(instance.container_name)
    assert container.status == "exited" and container.attrs["State"]["ExitCode"] == 0


def test_container_removed_behind_the_consoles_back_is_created_again(engine, container_instance):
    instance = container_instance()
    assert run(instance, "start").state == "succeeded"
    engine.containers.get(instance.container_name).remove(force=True, v=True)
    operation = run(instance, "restart")
    assert operation.state == "succeeded", operation.error
    assert operation.steps[1]["detail"] == "was not running"
    assert "created and started" in operation.steps[3]["detail"]


def test_missing_image_fails_with_reason(container_instance):
    instance = container_instance(image="instance-console-test/no-such-image:1")
    operation = run(instance, "start")
    assert operation.state == "failed"
    assert "Image 'instance-console-test/no-such-image:1' is not on this host" in operation.error


def test_unreachable_engine_fails_with_reason(container_instance):
    host = Host.objects.create(name="gone", docker_url="unix:///nonexistent/docker.sock")
    instance = container_instance(host=host)
    operation = run(instance, "restart")
    assert operation.state == "failed"
    assert "unix:///nonexistent/docker.sock" in operation.error or "Docker Engine" in operation.error


def test_recreate_of_a_container_the_console_did_not_create_is_refused_before_anything_changes(
    engine, container_instance
):
    """A container registered by name (as compose services are) with no stored spec: recreating it
    would bring back a bare container of its image. The operation is refused; the container runs on."""
    instance = container_instance(run_spec={})
    outsider = engine.containers.run(
        base_image(engine), ["sleep", "300"], name=instance.container_name, detach=True, network_mode="host"
    )
    operation = run(instance, "restart", recreate=True)
    assert operation.state == "failed"
    assert operation.error.startswith("recreate refused: container ") and "no stored run spec" in operation.error
    assert operation.steps == []  # not drained, not stopped
    outsider.reload()
    assert outsider.status == "running" and engine.containers.get(instance.container_name).id == outsider.id


def test_a_compose_service_is_never_recreated_even_with_the_console_s_label(engine, container_instance):
    """Compose replicas carry the console's label (so the socket proxy lets it restart them), but
    their setup (models mount, GPUs, networks) is compose's: a recreate is refused before anything."""
    instance = container_instance()
    service = engine.containers.run(
        base_image(engine),
        ["sleep", "300"],
        name=instance.container_name,
        detach=True,
        network_mode="host",
        labels={MANAGED_LABEL: "true", "com.docker.compose.project": "stack"},
    )
    operation = run(instance, "restart", recreate=True)
    assert operation.state == "failed" and "compose project 'stack'" in operation.error
    assert operation.steps == []
    assert engine.containers.get(instance.container_name).id == service.id


def test_a_container_is_matched_by_its_exact_name_never_by_an_id_prefix(engine, container_instance):
    other = engine.containers.run(base_image(engine), ["sleep", "300"], detach=True, network_mode="host")
    try:
        instance = container_instance(container_name=other.id[:12])  # a name that is another's ID prefix
        status = DockerRuntime(engine).status(instance)
        assert not status.running and "does not exist" in status.detail
    finally:
        other.remove(force=True)


@pytest.mark.parametrize(
    ("log_config", "kept"),
    [
        (None, {"driver": "json-file", "max_bytes": None, "files": 1}),  # Docker's default: never rotated
        ({"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}}, ("json-file", 10 * 2**20, 3)),
        ({"type": "local", "config": {}}, ("local", 20 * 2**20, 5)),  # the local driver rotates by default
        ({"type": "none", "config": {}}, ("none", None, None)),
    ],
)
def test_a_container_s_log_rotation_is_read_from_how_it_was_created(engine, container_instance, log_config, kept):
    """A container keeps the log options it was created with: one created before the console's limits
    (or by another tool) grows its json-file log until the daemon's disk is full; Diagnose says so."""
    instance = container_instance(run_spec={})
    options = {} if log_config is None else {"log_config": docker.types.LogConfig(**log_config)}
    engine.containers.create(base_image(engine), ["true"], name=instance.container_name, **options)
    if isinstance(kept, tuple):
        kept = dict(zip(("driver", "max_bytes", "files"), kept, strict=True))
    assert DockerRuntime(engine).status(instance).log_rotation == kept
    engine.containers.get(instance.container_name).remove(force=True)
    assert DockerRuntime(engine).status(instance).log_rotation is None  # no container: nothing to tell


@pytest.mark.parametrize(
    ("text", "size"),
    [("20m", 20 * 2**20), ("1.5g", 3 * 2**29), ("4096", 4096), ("10MB", 10 * 2**20), ("", None), ("lots", None)],
)
def test_docker_log_sizes_are_read_as_docker_reads_them(text, size):
    assert docker_size(text) == size
