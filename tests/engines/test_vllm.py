"""A real vLLM (its CPU build, scripts/install-vllm.sh) managed by a console of its own, serving our
smoke checkpoint: registered with --engine vllm, started, seen live in the browser, chatted with
through the official OpenAI client, diagnosed, soft-reset, restarted under load behind nginx with a
sibling taking the traffic, and, once its engine hangs, found stalled and restarted by the watchdog.

One vLLM for the module (it takes about half a minute to start on two cores); the tests run in order.
"""

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path

import httpx
import psutil
import pytest

from console.host.vllm import VllmServer
from tests.conftest import ROOT, EmbeddedConsole, free_port, until, wait_http
from tests.e2e.conftest import login

pytestmark = [pytest.mark.vllm, pytest.mark.browser, pytest.mark.slow]

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SCREENSHOTS = ROOT / "docs" / "screenshots"
DRAIN = 4  # the instance's drain timeout, which the console passes on as --shutdown-timeout
# Its stop timeout: vLLM ends about half a second after its shutdown timeout; an engine hung for the
# watchdog's test never does, and is killed after this (the default, 30 s, is waiting time here).
STOP = 12
INSTALL_WAIT = 1200  # scripts/test.sh installs vLLM beside the first tests


class Api:
    def __init__(self, console, token: str):
        self.console = console
        self.http = httpx.Client(base_url=console.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def instance(self, name: str = "vllm-a") -> dict:
        return self.http.get(f"/api/instances/{name}/").raise_for_status().json()

    def run(self, kind: str, name: str = "vllm-a", timeout: float = 240) -> dict:
        response = self.http.post(f"/api/instances/{name}/operations/", json={"kind": kind, "reason": "test"})
        assert response.status_code == 202, response.text
        return self.wait(response.json()["id"], timeout)

    def wait(self, operation_id: int, timeout: float = 240) -> dict:
        def finished():
            body = self.http.get(f"/api/operations/{operation_id}/").json()
            return body if body["state"] in ("succeeded", "failed", "cancelled") else None

        return until(finished, timeout, every=0.5)


def wait_for_the_install() -> None:
    """Where scripts/test.sh installs vLLM in the background, its status once it has finished."""
    status = os.environ.get("VLLM_INSTALL_STATUS")
    if not status:
        return
    deadline = time.monotonic() + INSTALL_WAIT
    while not Path(status).exists() and time.monotonic() < deadline:
        time.sleep(1)
    code = Path(status).read_text().strip() if Path(status).exists() else f"not done after {INSTALL_WAIT} s"
    if code != "0":
        pytest.fail(f"scripts/install-vllm.sh failed ({code}); its output: {os.environ.get('VLLM_INSTALL_LOG')}")


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    wait_for_the_install()
    if not VLLM_PYTHON.exists():
        pytest.fail("no vLLM here: scripts/install-vllm.sh installs it (make test does)")
    console = EmbeddedConsole(
        tmp_path_factory.mktemp("vllm-console"), CONSOLE_STALL_SECONDS="3", CONSOLE_STALL_PROBE_SECONDS="3"
    ).start()
    try:  # whatever fails on the way, the console and what it started are stopped
        port = free_port()
        model = Path(console.env["CONSOLE_VAR_DIR"]) / "models" / "smoke"
        command = [
            str(VLLM_PYTHON),
            "-m",
            "vllm.entrypoints.openai.api_server",
            *("--model", str(model), "--served-model-name", "smoke", "--host", "127.0.0.1", "--port", str(port)),
            *("--max-model-len", "1024", "--enforce-eager", "--gpu-memory-utilization", "0.1"),
        ]
        registered = console.manage(
            "register_instance",
            "vllm-a",
            *("--engine", "vllm", "--host", "local", "--url", f"http://127.0.0.1:{port}", "--group", "vl"),
            *("--command", json.dumps(command), "--drain-timeout", str(DRAIN), "--stop-timeout", str(STOP)),
            *("--env", "VLLM_CPU_KVCACHE_SPACE=1", "--env", "VLLM_SERVER_DEV_MODE=1"),
        )
        token = console.manage(
            "shell",
            "-c",
            "from console.api.models import ApiToken; from django.contrib.auth import get_user_model as g; "
            f"print(ApiToken.issue(g().objects.get(username='{console.username}'), 'vllm')[1])",
        ).stdout.splitlines()[-1]
        api = Api(console, token)
        started = api.run("start")
        yield {
            "console": console,
            "api": api,
            "port": port,
            "url": f"http://127.0.0.1:{port}",
            "start": started,
            "registered": registered,
        }
    finally:
        pids = psutil.Process(console.proc.pid).children(recursive=True) if console.proc.poll() is None else []
        console.stop()  # stops the instances it started, vLLM included
        for proc in pids:  # anything of its that did not end
            try:
                proc.kill()
            except psutil.Error:
                pass


def leader(vllm) -> psutil.Process:
    """The vLLM API server's process: the one listening on the instance's port."""
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == vllm["port"] and conn.pid:
            return psutil.Process(conn.pid)
    raise AssertionError("nothing listens on the vLLM port")


def chat(url: str, max_tokens: int = 16, **extra) -> httpx.Response:
    body = {"model": "smoke", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": max_tokens, **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=120)


def test_registered_and_started_with_its_shutdown_timeout(vllm):
    assert "warning" not in vllm["registered"].stderr  # the console launches it with the flag
    start = vllm["start"]
    assert start["state"] == "succeeded", start
    steps = {s["name"]: s for s in start["steps"]}
    assert list(steps) == ["start", "ready", "verify"]
    assert steps["verify"]["detail"] == "serving smoke"
    command = leader(vllm).cmdline()
    assert command[command.index("--shutdown-timeout") + 1] == str(DRAIN)
    assert "--enable-server-load-tracking" in command
    # The next sample after the start sees it ready.
    instance = until(lambda: (lambda i: i if i["status"] == "ready" else None)(vllm["api"].instance()), 30, every=0.5)
    assert instance["engine"] == "vllm" and instance["sample"]["in_flight"] is not None


def test_the_page_shows_vllm_figures_live(vllm, browser):
    console = vllm["console"]
    stop = threading.Event()

    def load():
        while not stop.is_set():
            chat(vllm["url"], 24)

    traffic = threading.Thread(target=load, daemon=True)
    traffic.start()
    try:
        page = browser.new_page()
        login(page, console)
        page.goto(console.url + "/instances/vllm-a/")
        page.wait_for_selector(".titlebar [data-field=status].ready", timeout=30_000)
        page.wait_for_function(
            "() => { const t = document.querySelector('[data-field=tokens_per_second]').textContent;"
            " return t !== '–' && Number(t) > 0; }",
            timeout=30_000,
        )
        kv = page.inner_text("[data-field=kv_cache]")
        assert kv.endswith("%"), kv
        assert page.inner_text("[data-field=queue]") != "– / –"
        assert page.inner_text("[data-field=in_flight]") != "–"
        # Latency is over the requests that finished between two scrapes: a window in which none
        # did (answers slower than the interval on a loaded machine) shows "– / –" until one does.
        page.wait_for_function(
            "() => document.querySelector('[data-field=latency]').textContent.includes('ms')", timeout=30_000
        )
        page.screenshot(path=str(SCREENSHOTS / "vllm.png"))
        page.close()
    finally:
        stop.set()
        traffic.join(60)


def png(width: int = 96, height: int = 64) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_the_openai_client_chats_with_an_image(vllm):
    from openai import OpenAI

    client = OpenAI(base_url=vllm["url"] + "/v1", api_key="unused", timeout=120)
    text_only = client.chat.completions.create(
        model="smoke", messages=[{"role": "user", "content": "What is in this image?"}], max_tokens=4
    )
    answer = client.chat.completions.create(
        model="smoke",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": png()}},
                ],
            }
        ],
        max_tokens=4,
        temperature=0,
        # A random model may well pick special tokens: shown rather than skipped, four tokens are text.
        extra_body={"min_tokens": 4, "ignore_eos": True, "skip_special_tokens": False},
    )
    assert answer.choices[0].message.content
    assert answer.usage.completion_tokens == 4
    # The image became image tokens in the prompt: GLM-4V's processor ran inside vLLM.
    assert answer.usage.prompt_tokens > text_only.usage.prompt_tokens + 4


def test_diagnose_reads_the_kv_cache(vllm, browser):
    console = vllm["console"]
    page = browser.new_page()
    login(page, console)
    page.goto(console.url + "/instances/vllm-a/")
    page.click("#diagnose-section button")
    page.wait_for_selector("#diagnose li", timeout=15_000)
    text = page.inner_text("#diagnose")
    assert "The KV cache has room." in text, text
    assert "Connections look normal." in text  # (host memory is judged once a process has settled)
    page.close()


def test_soft_reset_drops_the_prefix_cache(vllm):
    result = vllm["api"].run("soft_reset")
    assert result["state"] == "succeeded", result
    detail = result["steps"][0]["detail"]
    assert detail.startswith("prefix cache reset") and "no sleep mode on a CPU" in detail


def start_nginx(tmp: Path, listen: int, replicas: list[int]) -> subprocess.Popen:
    """nginx with the shipped replica configuration (deploy/vllm/nginx-replicas.conf), on our ports."""
    if not shutil.which("nginx"):
        pytest.fail("no nginx here: make test installs nginx-light")
    site = (ROOT / "deploy" / "vllm" / "nginx-replicas.conf").read_text()
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in replicas)
    site = site.replace("    server 127.0.0.1:8001;\n    server 127.0.0.1:8002;\n", servers)
    site = site.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{listen};")
    assert f"127.0.0.1:{listen}" in site and all(f"127.0.0.1:{p};" in site for p in replicas)
    (tmp / "nginx.conf").write_text(
        f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\n"
        f"http {{\n access_log off;\n client_body_temp_path {tmp}/body;\n proxy_temp_path {tmp}/proxy;\n"
        f"{site}\n}}\n"
    )
    process = subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"])
    wait_http(f"http://127.0.0.1:{listen}/health", timeout=20)
    return process


def test_a_restart_under_load_loses_no_request_when_a_sibling_takes_the_traffic(vllm, tmp_path):
    console = vllm["console"]
    front = free_port()
    # The sibling: the console's demo instance (our server; it answers for any model name).
    nginx = start_nginx(tmp_path, front, [vllm["port"], console.demo_port])
    outcomes: list = []
    stop = threading.Event()

    def client():
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                body = {"model": "smoke", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 24}
                try:
                    outcomes.append(http.post(f"http://127.0.0.1:{front}/v1/chat/completions", json=body).status_code)
                except httpx.HTTPError as exc:
                    outcomes.append(type(exc).__name__)

    clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    try:
        for thread in clients:
            thread.start()
        until(lambda: len(outcomes) >= 8, 60, every=0.2)
        before = len(outcomes)
        result = vllm["api"].run("restart")
        during = len(outcomes) - before
        stop.set()
        for thread in clients:
            thread.join(120)
    finally:
        stop.set()
        nginx.terminate()
        nginx.wait(10)
    assert result["state"] == "succeeded", result
    steps = {s["name"]: s["detail"] for s in result["steps"]}
    assert list(steps) == ["drain", "stop", "release", "start", "ready", "verify"]
    assert "after SIGTERM" in steps["stop"], steps  # vLLM ended by itself: nothing was killed
    assert "processes" in steps["release"] and "gone" in steps["release"]
    failures = [o for o in outcomes if o != 200]
    assert failures == [], f"{len(failures)} of {len(outcomes)} requests failed: {failures[:10]}"
    assert during >= 10, during  # traffic went on for the whole restart
    until(lambda: vllm["api"].instance()["status"] == "ready", 30, every=0.5)
    assert chat(vllm["url"]).status_code == 200


def test_a_hung_engine_is_found_stalled_and_restarted_by_the_watchdog(vllm):
    console, api = vllm["console"], vllm["api"]
    console.manage(
        "shell",
        "-c",
        "from console.watchdog.models import Watchdog; from console.instances.models import Instance; "
        "Watchdog.objects.update_or_create(instance=Instance.objects.get(name='vllm-a'), "
        "defaults=dict(liveness_failures=2, startup_grace_seconds=0, backoff_seconds=1))",
    )
    server = leader(vllm)
    engine = next(p for p in server.children(recursive=True) if "EngineCore" in " ".join(p.cmdline() or [p.name()]))

    def seen_by_vllm() -> dict:
        """vLLM's own count of its work: the engine's gauges (its API server keeps their last values)
        and the requests its HTTP server holds."""
        with closing(VllmServer(vllm["url"])) as server:
            gauges = server.scrape().gauges
            return {"engine": gauges["running"] + gauges["waiting"], "held": server.held()}

    # The engine's core stops dead while idle, as a hung engine does; a request sent after waits for
    # ever. The engine never counts it (its gauges stay at 0): the console sees it held by vLLM's HTTP
    # server (/load, the console launches vLLM with load tracking).
    engine.send_signal(signal.SIGSTOP)
    answer = {}

    def waiting_answer():
        try:
            answer["status"] = chat(vllm["url"]).status_code
        except httpx.HTTPError as exc:
            answer["error"] = exc

    hung = threading.Thread(target=waiting_answer, daemon=True)
    hung.start()
    try:
        # /health still says 200 ...
        assert httpx.get(vllm["url"] + "/health", timeout=5).status_code == 200
        until(lambda: seen_by_vllm()["held"] >= 1, 10, every=0.2)
        assert seen_by_vllm()["engine"] == 0 and not answer
        # ... but the console sees the stall,
        try:
            degraded = until(
                lambda: (lambda i: i if i["sample"] and "engine stalled" in (i["sample"]["detail"] or "") else None)(
                    api.instance()
                ),
                60,
                every=0.5,
            )
        except AssertionError:
            seen = api.instance()
            raise AssertionError(
                f"no stall seen in 60 s: latest sample {seen['sample']}, vLLM {seen_by_vllm()}"
            ) from None
        assert degraded["sample"]["status"] == "degraded"

        # and its watchdog restarts it.
        def watchdog_restart():
            operations = api.instance()["operations"]
            return next((o for o in operations if o["trigger"] == "watchdog" and o["kind"] == "restart"), None)

        restart = until(watchdog_restart, 60, every=0.5)
        finished = api.wait(restart["id"], timeout=240)
        assert finished["state"] == "succeeded", finished
        assert "engine stalled" in finished["reason"], finished["reason"]
        assert not engine.is_running() or engine.status() == psutil.STATUS_ZOMBIE
        until(lambda: api.instance()["status"] == "ready", 60, every=0.5)
        assert chat(vllm["url"]).status_code == 200
    finally:
        try:
            engine.send_signal(signal.SIGCONT)
        except psutil.Error:
            pass
        hung.join(5)
