"""PostgreSQL restarted in the middle of a restart: the operation is resumed once the database
is back and ends succeeded, with the instance serving. Runs on a private cluster of its own."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import ROOT, ServerProcess, celery_worker, free_port

pytestmark = pytest.mark.slow


class Cluster:
    def __init__(self):
        version = sorted(os.listdir("/usr/lib/postgresql"), key=int)[-1]
        self.bin = f"/usr/lib/postgresql/{version}/bin"
        # Outside pytest's private tmp: the postgres user must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="pg-restart-"))
        self.root.chmod(0o755)
        self.data, self.port = self.root / "pg", free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/console"

    def pg(self, *args, check=True):
        return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, check=check)

    def init(self):
        self.data.mkdir()
        shutil.chown(self.data, "postgres")
        self.pg(f"{self.bin}/initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.start()
        self.pg(f"{self.bin}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "console")
        return self

    def start(self):
        self.pg(
            f"{self.bin}/pg_ctl",
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.data / "log"),
            "-o",
            f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop(self):
        self.pg(f"{self.bin}/pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def remove(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def query(self, sql: str, *params):
        with psycopg.connect(self.url, connect_timeout=3) as conn:
            return conn.execute(sql, params).fetchone()


def test_operation_resumes_after_a_postgresql_restart(smoke_model, tmp_path):
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        pytest.fail("TEST_REDIS_URL is not set: run through make test")
    cluster = Cluster().init()
    server = ServerProcess(smoke_model, tmp_path)
    env = {
        **os.environ,
        "DATABASE_URL": cluster.url,
        "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/5",
        "CONSOLE_VAR_DIR": str(tmp_path / "var"),
        "CONSOLE_HEARTBEAT_STALE_SECONDS": "8",
    }
    subprocess.run(["redis-cli", "-u", env["REDIS_URL"], "flushdb"], check=True, capture_output=True)

    def manage(*args, check=True, extra_env=None):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**env, **(extra_env or {})},
            capture_output=True,
            text=True,
            check=check,
        )

    worker = None
    try:
        manage("migrate", "--noinput")
        spec = json.dumps({"env": server.env, "url": server.url, "token": server.token})
        manage(
            "shell",
            "-c",
            "import json, os; from tests.factories import process_instance; s = json.loads(os.environ['SPEC']); "
            "process_instance('pg-a', base_url=s['url'], env=s['env'], admin_token=s['token'])",
            extra_env={"SPEC": spec},
        )
        worker = celery_worker("host.local,console", env, tmp_path / "worker.log")
        started = manage("instance", "start", "pg-a", "--wait", check=False)
        assert started.returncode == 0, started.stdout + started.stderr
        manage("instance", "restart", "pg-a", "--reason", "database restart test")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # restart PostgreSQL once the old server is stopped
            steps = cluster.query("SELECT steps FROM operations_operation WHERE kind = 'restart'")[0]
            if any(s["name"] == "stop" and s["state"] == "done" for s in steps):
                break
            time.sleep(0.1)
        cluster.stop()
        time.sleep(3)
        cluster.start()
        deadline = time.monotonic() + 150
        state = None
        while time.monotonic() < deadline:
            state, error, attempts = cluster.query(
                "SELECT state, error, attempts FROM operations_operation WHERE kind = 'restart'"
            )
            if state not in ("queued", "running"):
                break
            time.sleep(1)
        assert state == "succeeded", (state, error, (tmp_path / "worker.log").read_text()[-3000:])
        status = manage("instance", "status", "pg-a").stdout
        assert "pg-a" in status
        assert httpx.get(server.url + "/health/ready").status_code == 200
        print(f"\ndatabase restart mid-operation: succeeded after {attempts} attempt(s)")
    finally:
        manage("instance", "stop", "pg-a", "--wait", check=False)
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
        cluster.remove()
