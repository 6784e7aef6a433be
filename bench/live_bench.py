"""Live transport benchmark on this machine (embedded mode, as `make run`):

1. sample-to-browser latency with N instances sampled every S seconds and M WebSocket clients
   on the dashboard (one of them a real chromium page, the rest protocol-level clients);
2. log lines per second delivered into a chromium page's log panel, and the longest gap between
   animation frames while they arrive (a frozen page would show gaps of seconds).

    python bench/live_bench.py [--instances 20] [--clients 50] [--seconds 60] [--log-rate 8000]
"""

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.browser import CHROMIUM_ARGS  # noqa: E402
from tests.conftest import free_port, wait_http  # noqa: E402

PASSWORD = "bench-password-123"


def manage(env, *args):
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True)


def setup(var: Path, instances: int, log_rate: int) -> tuple[dict, int]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "CONSOLE_VAR_DIR": str(var),
        "TELEMETRY_SAMPLE_SECONDS": os.environ.get("TELEMETRY_SAMPLE_SECONDS", "2"),
        "CONSOLE_DEMO_PASSWORD": PASSWORD,
    }
    manage(env, "migrate", "--noinput")
    manage(env, "bootstrap_demo", "--no-start")
    script = (
        "import sys\n"
        "from console.instances.models import Host, Instance\n"
        "host = Host.objects.get(name='local')\n"
        "Instance.objects.filter(name='demo').update(enabled=False)\n"
        f"for i in range({instances}):\n"
        f"    port = {free_port()} + i\n"
        "    rate = sys.argv[1] if i == 0 else '0'\n"
        "    Instance.objects.create(name=f'stub-{i:02d}', host=host, runtime='process', group='bench',\n"
        f"        command=[{sys.executable!r}, 'bench/health_stub.py', str(port), rate], working_dir={str(ROOT)!r},\n"
        "        base_url=f'http://127.0.0.1:{port}')\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os, sys; os.environ['DJANGO_SETTINGS_MODULE']='console.settings'; "
            "django.setup(); exec(sys.stdin.read())",
            str(log_rate),
        ],
        input=script,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    )
    port = free_port()
    return env, port


async def dashboard_clients(url: str, cookie: str, count: int, seconds: float) -> list[float]:
    latencies: list[float] = []

    async def one():
        async with websockets.connect(
            url.replace("http", "ws") + "/ws/dashboard/",
            additional_headers={"Cookie": cookie, "Origin": url},
            max_queue=None,
        ) as ws:
            end = time.time() + seconds
            while time.time() < end:
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, end - time.time()))
                except TimeoutError:
                    break
                event = json.loads(raw)
                if event["type"] == "samples":  # the dashboard's: a batch of a host's round
                    now = time.time()
                    latencies.extend((now - s["data"]["at"]) * 1000 for s in event["data"]["samples"])

    await asyncio.gather(*(one() for _ in range(count)))
    return latencies


def serve(env: dict, port: int, var: Path) -> subprocess.Popen:
    """The console as `make run` serves it, logging to var/serve.log."""
    log = open(var / "serve.log", "ab")  # noqa: SIM115 (the console writes to it until it stops)
    return subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


def shut_down(env: dict, console: subprocess.Popen, instances: int, var: Path) -> None:
    """Stop the stub instances, then the console (Ctrl-C, then its process group), and remove var/."""
    for i in range(instances):
        subprocess.run(
            [sys.executable, "manage.py", "instance", "stop", f"stub-{i:02d}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
        )
    console.send_signal(signal.SIGINT)
    try:
        console.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(console.pid, signal.SIGKILL)
    shutil.rmtree(var, ignore_errors=True)


def login(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get("/accounts/login/").text).group(1)
    client.post(
        "/accounts/login/",
        data={"username": "operator", "password": PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": url + "/accounts/login/"},
    )
    return client


def signed_in_with_stubs(env: dict, url: str, instances: int, reason: str) -> tuple[httpx.Client, str]:
    """Wait for the console, sign in, start the stub instances: (the signed-in client, its Cookie header)."""
    wait_http(url + "/accounts/login/", timeout=60)
    client = login(url)
    for i in range(instances):
        manage(env, "instance", "start", f"stub-{i:02d}", "--reason", reason)
    return client, "; ".join(f"{k}={v}" for k, v in client.cookies.items())


@contextlib.contextmanager
def dashboard_page(url: str, client: httpx.Client):
    """A real chromium page on the dashboard, signed in as `client`, keeping in `window.lat` the age
    of each sample when its script has written it into the page; closed, profile and all, on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        profile = tempfile.mkdtemp(prefix="bench-chromium-")
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True
        )
        try:
            context.add_cookies([{"name": k, "value": v, "url": url} for k, v in client.cookies.items()])
            page = context.new_page()
            page.goto(url + "/")
            page.evaluate(
                "window.lat = []; document.addEventListener('console:rendered', (e) =>"
                " e.detail.forEach((d) => window.lat.push(Date.now() - d.at * 1000)));"
            )
            yield page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def beside_clients(page, url: str, cookie: str, count: int, seconds: float) -> tuple[list[float], list[float]]:
    """`count` protocol clients on the dashboard for `seconds` beside the page: their latencies and
    the page's own."""
    latencies: list[float] = []
    # Playwright's sync API owns this thread's event loop: the clients get a thread of their own.
    clients = threading.Thread(
        target=lambda: latencies.extend(asyncio.run(dashboard_clients(url, cookie, count, seconds)))
    )
    clients.start()
    while clients.is_alive():
        page.wait_for_timeout(500)  # keep the page's own events flowing meanwhile
    return latencies, page.evaluate("window.lat")


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--log-rate", type=int, default=8000)
    args = parser.parse_args()
    var = Path(tempfile.mkdtemp(prefix="live-bench-"))
    env, port = setup(var, args.instances, args.log_rate)
    url = f"http://127.0.0.1:{port}"
    console = serve(env, port, var)
    try:
        client, cookie = signed_in_with_stubs(env, url, args.instances, "bench")
        with dashboard_page(url, client) as page:
            time.sleep(args.seconds / 6)  # every stub started and sampled at least once
            latencies, in_page = beside_clients(page, url, cookie, args.clients - 1, args.seconds)

            # Log lines into the instance page of the chatty stub.
            page.goto(url + "/instances/stub-00/")
            page.wait_for_selector("[data-live-state].on", timeout=15000)
            page.evaluate(
                "window.lines = 0; window.maxGap = 0; let last = performance.now();"
                "document.addEventListener('console:event', (e) => {"
                " if (e.detail.type === 'log.lines') window.lines += e.detail.data.lines.length; });"
                "(function frame(t) { window.maxGap = Math.max(window.maxGap, t - last); last = t;"
                " requestAnimationFrame(frame); })(performance.now());"
            )
            began = time.time()
            time.sleep(15)
            lines, gap = page.evaluate("[window.lines, window.maxGap]")
            shown = page.evaluate("document.querySelectorAll('#log-lines .line').length")
            rate = lines / (time.time() - began)
        result = {
            "instances": args.instances,
            "clients": args.clients,
            "sample_interval_s": float(env["TELEMETRY_SAMPLE_SECONDS"]),
            "samples_received": len(latencies) + len(in_page),
            "latency_ms_p50": round(pct(latencies, 50), 1),
            "latency_ms_p95": round(pct(latencies, 95), 1),
            "browser_latency_ms_p50": round(pct(in_page, 50), 1),
            "browser_latency_ms_p95": round(pct(in_page, 95), 1),
            "log_lines_per_s_written": args.log_rate,
            "log_lines_per_s_in_browser": round(rate),
            "log_lines_kept_in_page": shown,
            "longest_frame_gap_ms": round(gap),
        }
        print(json.dumps(result, indent=2))
    finally:
        shut_down(env, console, args.instances, var)


if __name__ == "__main__":
    main()
