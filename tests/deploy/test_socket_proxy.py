"""The Docker socket proxy against a real Docker Engine, with Debian's nginx and its JavaScript
module: what would give a caller the host is refused before Docker sees it, and nothing is created;
containers that are not the console's cannot be read, started, stopped or removed through it."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import docker
import pytest

from console.host.docker import MANAGED_LABEL
from tests.conftest import free_port
from tests.host.docker_images import base_image
from tests.host.test_docker_runtime import local_engine

pytestmark = pytest.mark.docker
PROXY = Path(__file__).resolve().parents[2] / "deploy" / "socket-proxy"


@pytest.fixture(scope="module")
def engine():
    return local_engine()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, engine):
    """nginx with the stack's proxy configuration, on 127.0.0.1, allowing binds from one directory."""
    if not shutil.which("nginx"):
        pytest.fail("no nginx here: make test installs nginx-light and libnginx-mod-http-js")
    conf = tmp_path_factory.mktemp("socket-proxy")
    models = tmp_path_factory.mktemp("models")
    for name in ("nginx.conf", "policy.js"):
        shutil.copy(PROXY / name, conf / name)
    port = free_port()
    (conf / "listen.conf").write_text(f"listen 127.0.0.1:{port};\n")
    (conf / "policy.conf").write_text(
        f'map "" $allowed_bind_sources {{ default "{models}"; }}\nmap "" $allowed_network_modes {{ default "host"; }}\n'
    )
    text = (conf / "nginx.conf").read_text().replace("/tmp/socket-proxy.pid", str(conf / "nginx.pid"))
    (conf / "nginx.conf").write_text(text.replace("/tmp/sp-", str(conf / "sp-")))
    log = open(conf / "error.log", "wb")
    process = subprocess.Popen(["nginx", "-c", str(conf / "nginx.conf"), "-g", "daemon off;"], stderr=log)
    for _ in range(50):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        process.kill()
        pytest.fail(f"the proxy did not start: {(conf / 'error.log').read_text()[-2000:]}")
    yield docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}", timeout=30), models
    process.terminate()
    process.wait(10)
    log.close()


@pytest.fixture
def names(engine):
    made = []
    yield made
    for name in made:
        try:
            engine.containers.get(name).remove(force=True, v=True)
        except docker.errors.NotFound:
            pass


def create(client, name: str, labels=None, **options):
    labels = {MANAGED_LABEL: "true"} if labels is None else labels
    image = base_image(docker.from_env())
    return client.containers.create(image, ["sleep", "600"], name=name, labels=labels, network_mode="host", **options)


FORBIDDEN = [
    ({"labels": {}}, "must carry the label"),
    ({"privileged": True}, "privileged"),
    ({"cap_add": ["SYS_ADMIN"]}, "capabilities"),
    ({"devices": ["/dev/sda:/dev/sda"]}, "devices"),
    ({"pid_mode": "host"}, "PidMode host"),
    ({"ipc_mode": "host"}, "IpcMode host"),
    ({"userns_mode": "host"}, "UsernsMode host"),
    ({"security_opt": ["apparmor=unconfined"]}, "security options"),
    ({"volumes": ["/:/host"]}, "exposes the Docker socket"),
    ({"volumes": ["/var/run/docker.sock:/docker.sock"]}, "Docker socket"),
    ({"volumes": ["/etc:/host-etc:ro"]}, "outside the allowed sources"),
    ({"sysctls": {"net.ipv4.ip_forward": "1"}}, "sysctls"),
    ({"log_config": {"type": "syslog", "config": {"syslog-address": "udp://127.0.0.1:514"}}}, "log driver syslog"),
]


@pytest.mark.parametrize("options, why", FORBIDDEN, ids=[why for _, why in FORBIDDEN])
def test_a_create_that_would_reach_the_host_is_refused_and_nothing_is_created(proxy, engine, names, options, why):
    client, _ = proxy
    name = f"ic-proxy-bad-{len(names)}-{time.monotonic_ns()}"
    names.append(name)
    with pytest.raises(docker.errors.APIError) as refused:
        create(client, name, **options)
    assert refused.value.status_code == 403 and why in str(refused.value.explanation)
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(name)


def test_the_console_s_own_container_goes_through_and_another_does_not(proxy, engine, names):
    client, models = proxy
    mine, theirs = f"ic-proxy-mine-{time.monotonic_ns()}", f"ic-proxy-theirs-{time.monotonic_ns()}"
    names.extend([mine, theirs])
    container = create(client, mine, volumes=[f"{models}:/models:ro", "ic-proxy-cache:/cache"])
    container.start()
    assert client.containers.get(mine).status == "running" and container.logs() == b""
    container.stop(timeout=1)
    container.remove()

    create(engine, theirs, labels={})  # straight to the Engine: not the console's
    for attempt in (
        lambda: client.containers.get(theirs),
        lambda: client.api.start(theirs),
        lambda: client.api.stop(theirs),
        lambda: client.api.remove_container(theirs, force=True),
    ):
        with pytest.raises(docker.errors.APIError) as refused:
            attempt()
        assert refused.value.status_code == 403 and "not the console's" in str(refused.value.explanation)
    assert engine.containers.get(theirs).name == theirs  # still there
    with pytest.raises(docker.errors.APIError) as refused:
        client.api.exec_create(theirs, ["id"])
    assert refused.value.status_code == 403
    try:
        engine.volumes.get("ic-proxy-cache").remove(force=True)
    except docker.errors.NotFound:
        pass


def test_a_forged_request_through_the_worker_is_refused(proxy, engine, names):
    """An alert's webhook (or a model server's URL) pointed at the proxy: the worker would POST its
    JSON there. Its URL and body are the forger's, its User-Agent httpx's: refused, the replica runs."""
    import httpx

    client, _ = proxy
    mine = f"ic-proxy-forged-{time.monotonic_ns()}"
    names.append(mine)
    create(client, mine).start()
    for path in (f"/containers/{mine}/stop", f"/v1.41/containers/{mine}/restart", "/_ping"):
        answer = httpx.post(client.api.base_url + path, json={"event": "operation.failed"}, timeout=10)
        assert answer.status_code == 403 and "only the console's Docker client" in answer.text, path
    assert engine.containers.get(mine).status == "running"
    assert client.ping()  # the console's own client still goes through
