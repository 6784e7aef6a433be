"""The production compose stack, on this machine: CPU replicas, images built here, the stack's own
networks (internal bridges; only nginx published, on 127.0.0.1). Attacked first as the review did:
from inside a replica, Redis, PostgreSQL and the Docker proxy are out of reach; Redis wants its
password; the proxy refuses a privileged container; the public listener never forwards /admin/; a
forged X-Forwarded-For escapes no sign-in limit and lands in no audit entry. Then an operator logs in
with chromium through nginx, watches both replicas turn ready on the live dashboard and restarts the
replica group from it, rolling, while clients keep sending requests through nginx: none fails."""

import os
import secrets
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import httpx
import pytest

from tests.browser import launch
from tests.conftest import ROOT, wait_http
from tests.host.docker_images import console_image, inference_image, services_image
from tests.inference.helpers import chat

pytestmark = [pytest.mark.docker, pytest.mark.browser, pytest.mark.slow]

# Below the kernel's ephemeral range (32768-60999 by default): a port in it can be taken, between the
# check and `up`, by any client connection's source port (a CI run failed on 58080 that way).
PORTS = (18080, 18081)
CONSOLE = f"http://127.0.0.1:{PORTS[0]}"
INFERENCE = f"http://127.0.0.1:{PORTS[1]}"
PROJECT = "ictest"

REACH = """
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        out[target] = "connected"
    except OSError as exc:
        out[target] = type(exc).__name__
print(json.dumps(out))
"""
PRIVILEGED = """
import docker
client = docker.DockerClient(base_url="tcp://socket-proxy:2375", version="1.41")
try:
    client.containers.create("x", name="ictest-escape", privileged=True, labels={"io.instance-console.managed": "true"})
    print("created")
except docker.errors.APIError as exc:
    print(exc.status_code, exc.explanation)
"""


def attacks_fail(client: docker.DockerClient) -> None:
    """What the review tried from a compromised replica and from the internet, on the real stack."""
    container = client.containers.get
    targets = ["redis:6379", "postgres:5432", "socket-proxy:2375"]
    for service, port in (("redis", 6379), ("postgres", 5432), ("socket-proxy", 2375)):
        networks = container(f"{PROJECT}_{service}_1").attrs["NetworkSettings"]["Networks"]
        targets += [f"{net['IPAddress']}:{port}" for net in networks.values() if net.get("IPAddress")]
    reached = container("glm-a-1").exec_run(["python3", "-c", REACH, *targets]).output.decode()
    assert "connected" not in reached, f"a replica reached a service it must not: {reached}"

    noauth = container(f"{PROJECT}_redis_1").exec_run(["redis-cli", "ping"]).output.decode()
    assert "NOAUTH" in noauth or "NOPERM" in noauth, noauth

    refused = container(f"{PROJECT}_worker-gpu-a_1").exec_run(["python3", "-c", PRIVILEGED]).output.decode()
    assert refused.startswith("403") and "privileged" in refused, refused
    assert not client.containers.list(all=True, filters={"name": "ictest-escape"})

    for path in ("/admin/restart", "/admin/drain", "/debug/faults"):
        assert httpx.post(INFERENCE + path, json={}).status_code == 404

    with httpx.Client(base_url=CONSOLE) as browser:
        for n in range(6):
            page = browser.get("/accounts/login/")
            token = page.text.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
            answer = browser.post(
                "/accounts/login/",
                data={"username": "target-x", "password": "guess", "csrfmiddlewaretoken": token},
                headers={"X-Forwarded-For": f"203.0.113.{n}", "Referer": CONSOLE + "/accounts/login/"},
            )
        assert "Too many failed sign-ins" in answer.text  # the forged addresses changed nothing


class Load:
    """Steady client traffic through nginx, counting every answer."""

    def __init__(self, rate: float):
        self.rate, self.stop_event = rate, threading.Event()
        self.statuses: list[int | str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def one(self, client: httpx.Client):
        try:
            self.statuses.append(client.post(INFERENCE + "/v1/chat/completions", json=chat(max_tokens=4)).status_code)
        except httpx.HTTPError as exc:
            self.statuses.append(type(exc).__name__)

    def run(self):
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(max_workers=16) as pool:
            while not self.stop_event.is_set():
                pool.submit(self.one, client)
                time.sleep(1 / self.rate)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(timeout=90)


def test_rolling_restart_through_nginx_loses_no_request(smoke_model, tmp_path):
    client = docker.from_env()
    services, inference = services_image(client), inference_image(client)
    client.images.get(console_image(client)).tag("instance-console", "latest")
    password = secrets.token_urlsafe(16)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "COMPOSE_PROJECT_NAME": PROJECT,
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
        "REDIS_PASSWORD": secrets.token_urlsafe(16),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "INFERENCE_ADMIN_TOKEN": secrets.token_urlsafe(16),
        "CONSOLE_OPERATOR_PASSWORD": password,
        "SERVICES_IMAGE": services,
        "CONSOLE_BASE_IMAGE": services,
        "INFERENCE_IMAGE_CPU": inference,
        "SMOKE_MODEL_DIR": str(smoke_model),
    }
    compose = ["docker-compose", "-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml", "--profile", "cpu"]

    def run(*args, check=True):
        result = subprocess.run([*compose, *args], cwd=ROOT, env=env, capture_output=True, text=True)
        if check and result.returncode:
            raise AssertionError(f"docker-compose {' '.join(args)}: {result.stderr[-3000:]}")
        return result

    run("down", "-v", "--remove-orphans", check=False)  # leftovers of an interrupted run
    for port in PORTS:
        # Any state, not only listening: a connection or a TIME_WAIT on the port fails the bind too.
        if subprocess.run(["ss", "-tanH", f"sport = :{port}"], capture_output=True, text=True).stdout.strip():
            pytest.fail(f"port {port} is taken; the CPU stack binds it on 127.0.0.1")
    run("up", "-d", "--no-build")
    try:
        wait_http(CONSOLE + "/accounts/login/", timeout=180)
        wait_http(INFERENCE + "/health/ready", timeout=180)
        attacks_fail(client)
        # Every container's log is rotated (Docker keeps everything by default).
        for container in client.containers.list(filters={"label": f"com.docker.compose.project={PROJECT}"}):
            log_config = container.attrs["HostConfig"]["LogConfig"]
            assert log_config["Config"].get("max-size") == "20m", (container.name, log_config)
            assert log_config["Config"].get("compress") == "true", (container.name, log_config)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser, profile = launch(playwright)
            try:
                page = browser.new_page()
                page.on("dialog", lambda dialog: dialog.accept())  # "Restart every instance of this group?"
                page.goto(CONSOLE + "/")
                page.fill("input[name=username]", "operator")
                page.fill("input[name=password]", password)
                page.click("button[type=submit]")
                page.wait_for_load_state()
                assert page.url == CONSOLE + "/", f"{page.url}: {page.content()[:3000]}"
                for name in ("glm-a-1", "glm-a-2"):
                    assert page.locator(f'[data-instance="{name}"]').count(), page.content()[-3000:]
                # Both replicas sampled by the worker through the socket proxy, shown live.
                page.wait_for_function("document.querySelectorAll('.badge.ready').length >= 2", timeout=60_000)

                with Load(rate=20) as load:
                    time.sleep(3)
                    form = page.locator("#rollout-form")
                    form.locator("select[name=group]").select_option("glm-a")
                    form.locator("select[name=strategy]").select_option("rolling")
                    form.locator("input[name=reason]").fill("compose test")
                    form.locator("button[type=submit]").click()
                    card = page.locator("#rollout-live .rollout").first
                    card.wait_for(timeout=30_000)
                    page.wait_for_function(
                        "['succeeded', 'failed'].includes("
                        "document.querySelector('#rollout-live .rollout')?.dataset.state)",
                        timeout=240_000,
                    )
                    time.sleep(3)
                state = card.get_attribute("data-state")
                assert state == "succeeded", card.inner_text()
                failed = [s for s in load.statuses if s != 200]
                print(
                    f"\ncompose: {len(load.statuses)} requests through nginx during the rolling restart "
                    f"(started in chromium), {len(failed)} failed"
                )
                assert len(load.statuses) > 100 and not failed, failed[:20]
                page.goto(CONSOLE + "/audit/?action=rollout")
                audit = page.content()
                assert "rollout.requested" in audit and "operator" in audit
                page.goto(CONSOLE + "/audit/?action=login")
                audit = page.content()
                assert "target-x" in audit and "203.0.113." not in audit  # nginx's address, not the forged one
            finally:
                browser.close()
                shutil.rmtree(profile, ignore_errors=True)
    except BaseException:
        print(run("logs", "--tail", "40", check=False).stdout[-12000:])
        raise
    finally:
        run("down", "-v", "--remove-orphans", check=False)
