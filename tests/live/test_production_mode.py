"""Production topology on this machine: PostgreSQL, Redis, the ASGI console, a Celery worker for
the host's queue and a beat, each its own process. Live events cross Redis to WebSocket clients."""

import json
import os
import re
import secrets
import subprocess
import sys
import time

import httpx
import psycopg
import pytest
from websockets.sync.client import connect

from tests.conftest import ROOT, celery_worker, free_port, spawn, wait_http
from tests.inference.helpers import chat

pytestmark = pytest.mark.slow


def admin_dsn() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url or not url.startswith("postgres"):
        pytest.skip("needs TEST_DATABASE_URL (make test starts PostgreSQL)")
    return url.rsplit("/", 1)[0] + "/postgres"


class ProductionStack:
    username, password = "operator", "prod-password-for-tests"

    def __init__(self, tmp):
        redis_url = os.environ.get("TEST_REDIS_URL")
        if not redis_url:
            pytest.skip("needs TEST_REDIS_URL (make test starts Redis)")
        self.db = f"console_prod_{secrets.token_hex(4)}"
        self.port, self.demo_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "CONSOLE_VAR_DIR": str(tmp),
            "DATABASE_URL": admin_dsn().rsplit("/", 1)[0] + f"/{self.db}",
            "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/7",
            "TELEMETRY_SAMPLE_SECONDS": "1",
            "CONSOLE_DEMO_PASSWORD": self.password,
            "CONSOLE_DEMO_PORT": str(self.demo_port),
            "SECRET_KEY": secrets.token_urlsafe(40),
        }
        self.procs: list[subprocess.Popen] = []

    def manage(self, *args, check=True):
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, check=check
        )

    def start(self):
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        subprocess.run(["redis-cli", "-u", self.env["REDIS_URL"], "flushdb"], check=True, capture_output=True)
        self.manage("migrate", "--noinput")
        self.manage("bootstrap_demo", "--no-start")
        self.procs.append(
            celery_worker("console,host.local", self.env, self.tmp / "worker.log", "threads", 6, "-l", "INFO")
        )
        beat = [sys.executable, "-m", "celery", "-A", "console", "beat", "-l", "INFO", "-s", str(self.tmp / "beat")]
        self.procs.append(spawn(beat, self.env, self.tmp / "beat.log"))
        self.procs.append(
            spawn([sys.executable, "manage.py", "serve", "--port", str(self.port)], self.env, self.tmp / "web.log")
        )
        wait_http(self.url + "/accounts/login/", timeout=60)
        return self

    def session(self) -> httpx.Client:
        client = httpx.Client(base_url=self.url)
        page = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = client.post(
            "/accounts/login/",
            data={"username": self.username, "password": self.password, "csrfmiddlewaretoken": token},
            headers={"Referer": self.url + "/accounts/login/"},
        )
        assert response.status_code == 302, response.text[:300]
        return client

    def websocket(self, client: httpx.Client, path: str):
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        return connect(
            f"ws://127.0.0.1:{self.port}{path}",
            additional_headers={"Cookie": cookie, "Origin": self.url},
            open_timeout=10,
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n" + (self.tmp / name).read_text(errors="replace")[-3000:]
            for name in ("worker.log", "beat.log", "web.log")
            if (self.tmp / name).exists()
        )

    def stop(self):
        self.manage("instance", "stop", "demo", "--wait", check=False)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


def receive_until(ws, predicate, timeout: float):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            event = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        except TimeoutError:
            break
        seen.append(event)
        if predicate(event):
            return event, seen
    raise AssertionError(f"no matching event within {timeout} s; saw {[e['type'] for e in seen][-20:]}")


def demo_ready(event: dict) -> bool:
    """A dashboard event with a sample of the demo instance, ready (samples come in batches)."""
    return event["type"] == "samples" and any(
        s["instance"] == "demo" and s["data"]["status"] == "ready" for s in event["data"]["samples"]
    )


def test_samples_logs_and_a_restart_reach_websocket_clients_through_redis(tmp_path):
    stack = ProductionStack(tmp_path).start()
    try:
        client = stack.session()
        started = stack.manage("instance", "start", "demo", "--wait", "--reason", "test", check=False)
        assert started.returncode == 0, started.stdout + started.stderr + stack.logs()
        with stack.websocket(client, "/ws/dashboard/") as dashboard:
            event, _ = receive_until(dashboard, demo_ready, timeout=30)
            [demo] = [s for s in event["data"]["samples"] if s["instance"] == "demo"]
            assert demo["data"]["probe_ms"] > 0
            with stack.websocket(client, "/ws/instances/demo/") as page:
                marker = secrets.token_hex(8)
                httpx.post(
                    f"http://127.0.0.1:{stack.demo_port}/v1/chat/completions",
                    json=chat(),
                    headers={"X-Request-Id": marker},
                )
                receive_until(
                    page,
                    lambda e: e["type"] == "log.lines" and any(marker in line["text"] for line in e["data"]["lines"]),
                    timeout=20,
                )
            restart = subprocess.Popen(
                [sys.executable, "manage.py", "instance", "restart", "demo", "--wait", "--reason", "redis mode"],
                cwd=ROOT,
                env=stack.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            _, seen = receive_until(
                dashboard,
                lambda e: (
                    e["type"] == "operation.updated"
                    and e["data"]["kind"] == "restart"
                    and e["data"]["state"] == "succeeded"
                ),
                timeout=90,
            )
            assert restart.wait(30) == 0, restart.stdout.read()
            steps = {s["name"] for e in seen if e["type"] == "operation.updated" for s in e["data"]["steps"]}
            assert {"handover", "ready", "verify"} <= steps  # the demo's restarts are handovers
            receive_until(dashboard, demo_ready, timeout=30)

            # The beat process (its own process, the database scheduler) fires a schedule; the
            # worker runs it as a rollout whose restart reaches the dashboard. Its beat entry last
            # ran two minutes ago, so the run since is due at beat's next look, not next minute.
            stack.manage(
                "shell",
                "-c",
                "import datetime\n"
                "from django.utils import timezone\n"
                "from console.instances.models import Instance\n"
                "from console.schedules.models import RestartSchedule\n"
                "s = RestartSchedule.objects.create(name='every-minute', cron='* * * * *', timezone='UTC')\n"
                "s.instances.add(Instance.objects.get(name='demo'))\n"
                "s.periodic_task.last_run_at = timezone.now() - datetime.timedelta(minutes=2)\n"
                "s.periodic_task.save()",
            )
            event, _ = receive_until(
                dashboard,
                lambda e: (
                    e["type"] == "operation.updated"
                    and e["data"]["trigger"] == "schedule"
                    and e["data"]["state"] in ("succeeded", "failed")
                ),
                timeout=150,
            )
            assert event["data"]["state"] == "succeeded", event
            assert "Sending due task restart-schedule-" in (stack.tmp / "beat.log").read_text()
        # The page itself, rendered from PostgreSQL.
        assert "Demo (smoke model, CPU)" in client.get("/").text
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()
