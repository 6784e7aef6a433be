"""Shared fixtures: real services only (PostgreSQL, Redis, inference server processes)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings
from django.utils import translation

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.browser"]


@pytest.fixture(autouse=True)
def _the_default_language_after_each_test():
    """A page requested in another language leaves it active in the thread (LocaleMiddleware activates
    it, nothing deactivates it), so a later test in this process would read that language. (Without
    Django set up, as the GPU machine runs the model server's tests, there is no language to reset.)"""
    yield
    if settings.configured:
        translation.deactivate()


def free_port() -> int:
    """A port free on every address (bound on all of them, never listening): one free on 127.0.0.1 alone
    may be another process's connection's on another, and the connections sampled are counted by port."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


def spawn(command: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    """Start a process from the repository root in its own session, its output appended to log_path."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_http(url: str, timeout: float = 60, status: int = 200) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == status:
                return
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {status} within {timeout} s (last: {last})")


def celery_worker(
    queues: str, env: dict, log_path: Path, pool: str = "threads", concurrency: int = 4, *extra: str
) -> subprocess.Popen:
    """A real `celery worker` process (its own session, a unique name) on the given queues."""
    command = [sys.executable, "-m", "celery", "-A", "console", "worker", "-Q", queues, f"--pool={pool}"]
    if pool != "solo":
        command += ["-c", str(concurrency)]
    command += ["--without-mingle", "--without-gossip", "-n", f"w{time.monotonic_ns()}@test", *extra]
    return spawn(command, env, log_path)


def until(condition, timeout: float, every: float = 1.0, between=None):
    """The condition's first true value, checked every `every` seconds (calling `between` first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if between is not None:
            between()
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s")


@pytest.fixture(scope="session")
def smoke_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "smoke"
    subprocess.run(
        [sys.executable, "-m", "inference.smoke_model", str(path)], check=True, cwd=ROOT, capture_output=True
    )
    return path


class ServerProcess:
    """A real inference server in its own process group (under inference.supervisor when
    `module` names it)."""

    def __init__(self, model: Path, tmp: Path, module: str = "inference.server", **env):
        self.module = module
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = "test-admin-token"
        self.log_path = tmp / f"server-{self.port}.log"
        passed = ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "HOME")
        self.env = {
            **{key: os.environ[key] for key in passed if key in os.environ},
            "MODEL_PATH": str(model),
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "ADMIN_TOKEN": self.token,
            **{k: str(v) for k, v in env.items()},
        }
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "ServerProcess":
        self.proc = spawn([sys.executable, "-m", self.module], self.env, self.log_path)
        if wait:
            wait_http(self.url + "/health/ready", timeout=90)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc:
            try:  # a supervisor's child that outlived it
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def short_tmp():
    """A directory with a short path, for a server's TMPDIR: its supervisor makes the weight holder's
    socket there, torch its shared memory's, and an AF_UNIX path holds 107 bytes (pytest's tmp_path
    can be longer). Listed before the servers that use it, it is removed after they stop."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="ic-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_server(smoke_model, tmp_path):
    servers: list[ServerProcess] = []

    def start(wait: bool = True, module: str = "inference.server", **env) -> ServerProcess:
        server = ServerProcess(smoke_model, tmp_path, module, **env)
        servers.append(server)
        return server.start(wait=wait)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(smoke_model, tmp_path_factory):
    """One server for a module's read-mostly tests (limits, bad input)."""
    server = ServerProcess(
        smoke_model,
        tmp_path_factory.mktemp("shared"),
        MAX_IMAGES=2,
        MAX_IMAGE_BYTES=200_000,
        MAX_IMAGE_PIXELS=1_000_000,
        MAX_PROMPT_TOKENS=600,
        MAX_NEW_TOKENS=64,
        MAX_BODY_BYTES=1_000_000,
    ).start()
    yield server
    server.stop()


@pytest.fixture
def managed(smoke_model, tmp_path):
    """Process instances of the smoke server (not started); stopped again after the test."""
    from console.host.process import ProcessRuntime
    from tests.factories import process_instance

    created = []

    def make(name: str, **fields):
        server = ServerProcess(smoke_model, tmp_path)
        instance = process_instance(name, server, **fields)
        created.append(instance)
        return instance

    yield make
    for instance in created:
        ProcessRuntime().stop(instance, timeout=5)


@pytest.fixture
def worker(transactional_db):
    """A real Celery worker (threads, in-memory broker) consuming the console and local host queues."""
    from console.embedded.worker import EmbeddedWorker

    running = EmbeddedWorker(["console", "host.local"], concurrency=4, beat=False)
    running.start()
    yield running
    running.stop()


class WebhookReceiver:
    """A real HTTP endpoint on 127.0.0.1 that records JSON posts; can be told to fail first."""

    def __init__(self, fail_first: int = 0):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[dict] = []
        self.failures_left = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the standard library's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.failures_left > 0:
                    receiver.failures_left -= 1
                    self.send_response(503)
                else:
                    receiver.received.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[str]:
        return [body.get("event") for body in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def redis_database(number: int) -> str:
    """The URL of a database of its own on the real Redis `make test` starts."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.fail("TEST_REDIS_URL is not set: run through make test, which starts Redis")
    return url.rsplit("/", 1)[0] + f"/{number}"


@pytest.fixture
def redis_cache():
    """The console's cache on the real Redis `make test` starts, as production has it."""
    location = redis_database(5)
    backend = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": location,
        "OPTIONS": {"serializer": "console.serializers.JSONSerializer"},
    }
    with override_settings(CACHES={"default": backend}):
        cache.clear()
        yield cache
        cache.clear()


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


class EmbeddedConsole:
    """`make run` in miniature: migrate, bootstrap the demo, serve — in a fresh var/ with SQLite."""

    username = "operator"
    password = "demo-password-for-tests"

    def __init__(self, var: Path, **extra_env: str):
        self.port = free_port()
        self.demo_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.demo_url = f"http://127.0.0.1:{self.demo_port}"
        self.log_path = var / "serve.log"
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "CONSOLE_VAR_DIR": str(var),
            "CONSOLE_DEMO_PASSWORD": self.password,
            "CONSOLE_DEMO_PORT": str(self.demo_port),
            "TELEMETRY_SAMPLE_SECONDS": "1",
            **extra_env,
        }
        self.proc: subprocess.Popen | None = None

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, check=True
        )

    def start(self) -> "EmbeddedConsole":
        self.manage("migrate", "--noinput")
        self.bootstrap_output = self.manage("bootstrap_demo").stdout
        self.proc = spawn([sys.executable, "manage.py", "serve", "--port", str(self.port)], self.env, self.log_path)
        wait_http(self.url + "/accounts/login/", timeout=60)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGINT) -> int | None:
        """Ctrl-C, as an operator would (or SIGTERM, as systemd and docker stop do)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)


@pytest.fixture(scope="session")
def embedded_console(tmp_path_factory):
    console = EmbeddedConsole(tmp_path_factory.mktemp("embedded-var"))
    console.start()
    yield console
    console.stop()
