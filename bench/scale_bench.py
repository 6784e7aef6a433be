"""The cost curve on the production topology: PostgreSQL, Redis, the ASGI console, one Celery worker
per host (its own queue and CONSOLE_HOST_NAME) and beat, each its own process, over instances that
are real HTTP servers answering the health contract (bench/health_stub.py), sampled every
TELEMETRY_SAMPLE_SECONDS.

    BENCH_POSTGRES=postgres://USER:PASS@127.0.0.1:5433/postgres BENCH_REDIS=redis://127.0.0.1:6391/0 \\
        python bench/scale_bench.py --hosts 1 4 --instances 10 100 --clients 50 --seconds 60 --out scale.json

For each (hosts, instances): sample-to-browser latency p50/p95 over `--clients` on the dashboard (one
real chromium page, whose own latency is measured as its script applies the events, and protocol
clients); the dashboard's page time; each worker's CPU per sampled instance; samples written
per second; the console's RSS. A fresh database for each.

    ... python bench/scale_bench.py --hosts 1 --instances 500 --soak 3600 --every 300 --raw-retention 900

A soak: one stack for `--soak` seconds; every `--every` seconds the sample table's rows and size, the
database's size, the console's and the workers' RSS, and 20 s of sample-to-browser latency. With a
short TELEMETRY_RAW_RETENTION the raw rows stop growing once retention prunes as fast as sampling
writes; what the default (24 h) holds follows from the rows per hour measured.
"""

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from live_bench import beside_clients, dashboard_clients, dashboard_page  # noqa: E402

from tests.conftest import celery_worker, free_port, spawn, wait_http  # noqa: E402

PASSWORD = "bench-password-123"

SETUP = """
import sys
from console.host.process import ProcessRuntime
from console.instances.models import Host, Instance
hosts, count, first_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
Instance.objects.filter(name="demo").update(enabled=False)
made = []
for n in range(count):
    host = Host.objects.get_or_create(name=f"h{n % hosts}")[0]
    port = first_port + n
    made.append(Instance.objects.create(
        name=f"stub-{n:03d}", host=host, runtime="process", group=f"g{n % 10}",
        command=[sys.executable, "bench/health_stub.py", str(port)], working_dir=sys.argv[4],
        base_url=f"http://127.0.0.1:{port}"))
for instance in made:
    ProcessRuntime().start(instance)
"""
STOP = """
from console.host.process import ProcessRuntime
from console.instances.models import Instance
for instance in Instance.objects.filter(name__startswith="stub-"):
    ProcessRuntime().stop(instance, timeout=5)
"""
ROWS = "from console.telemetry.models import Sample; print(Sample.objects.count())"
SIZES = """
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("SELECT pg_database_size(current_database()), pg_total_relation_size('telemetry_sample')")
    print(*cursor.fetchone())
"""


def pct(values: list[float], q: int) -> float | None:
    return round(statistics.quantiles(values, n=100)[q - 1], 1) if len(values) >= 2 else None


class Stack:
    def __init__(self, hosts: int, instances: int, sample_seconds: int, **env: str):
        self.hosts, self.instances = hosts, instances
        self.var = Path(tempfile.mkdtemp(prefix="scale-bench-"))
        self.db = f"scale_bench_{secrets.token_hex(4)}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        admin = os.environ["BENCH_POSTGRES"]
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "CONSOLE_VAR_DIR": str(self.var),
            "DATABASE_URL": admin.rsplit("/", 1)[0] + f"/{self.db}",
            "REDIS_URL": os.environ["BENCH_REDIS"],
            "TELEMETRY_SAMPLE_SECONDS": str(sample_seconds),
            "CONSOLE_DEMO_PASSWORD": PASSWORD,
            "SECRET_KEY": secrets.token_urlsafe(40),
            **env,
        }
        self.workers: list[subprocess.Popen] = []
        self.procs: list[subprocess.Popen] = []

    def python(self, code: str, *args: str) -> str:
        wrapped = "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='console.settings'; django.setup()\n" + code
        done = subprocess.run(
            [sys.executable, "-c", wrapped, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, check=True
        )
        return done.stdout

    def manage(self, *args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True)

    def start(self) -> None:
        with psycopg.connect(os.environ["BENCH_POSTGRES"], autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        subprocess.run(["redis-cli", "-u", self.env["REDIS_URL"], "flushdb"], check=True, capture_output=True)
        self.manage("migrate", "--noinput")
        self.manage("bootstrap_demo", "--no-start")
        self.python(SETUP, str(self.hosts), str(self.instances), str(free_port()), str(ROOT))
        for n in range(self.hosts):
            queues = f"host.h{n}" + (",console" if n == 0 else "")
            env = {**self.env, "CONSOLE_HOST_NAME": f"h{n}"}
            self.workers.append(celery_worker(queues, env, self.var / f"worker-h{n}.log", "threads", 8))
        beat = [sys.executable, "-m", "celery", "-A", "console", "beat", "-s", str(self.var / "beat")]
        self.procs.append(spawn(beat, self.env, self.var / "beat.log"))
        self.console = spawn(
            [sys.executable, "manage.py", "serve", "--port", str(self.port)], self.env, self.var / "web.log"
        )
        self.procs.append(self.console)
        wait_http(self.url + "/accounts/login/", timeout=60)

    def stop(self) -> None:
        try:
            self.python(STOP)
        finally:
            for proc in [*self.procs, *self.workers]:
                if proc.poll() is None:
                    proc.terminate()
            for proc in [*self.procs, *self.workers]:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            with psycopg.connect(os.environ["BENCH_POSTGRES"], autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
            shutil.rmtree(self.var, ignore_errors=True)

    def session(self) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get("/accounts/login/").text).group(1)
        client.post(
            "/accounts/login/",
            data={"username": "operator", "password": PASSWORD, "csrfmiddlewaretoken": token},
            headers={"Referer": self.url + "/accounts/login/"},
        )
        return client


def with_a_browser(url: str, client: httpx.Client, clients: int, seconds: float) -> tuple[list, list, float]:
    """One real chromium page on the dashboard beside `clients` - 1 protocol clients: the clients'
    latencies, the page's own (as its script writes the samples into the page) and the share of a
    core chromium's processes took meanwhile (percent)."""
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    with dashboard_page(url, client) as page:
        before, began = browser_cpu(), time.monotonic()
        latencies, in_page = beside_clients(page, url, cookie, clients - 1, seconds)
        return latencies, in_page, round((browser_cpu() - before) * 100 / (time.monotonic() - began), 1)


def browser_cpu() -> float:
    """CPU seconds of this process's chromium descendants."""
    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            if "chrom" in proc.name():
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
    return total


def cpu_seconds(procs: list[subprocess.Popen]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = psutil.Process(proc.pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def measure(hosts: int, instances: int, clients: int, seconds: float, sample_seconds: int) -> dict:
    stack = Stack(hosts, instances, sample_seconds)
    try:
        stack.start()
        client = stack.session()
        time.sleep(3 * sample_seconds + 5)  # every stub sampled a few times
        page_ms = []
        for _ in range(5):
            began = time.perf_counter()
            assert client.get("/").status_code == 200
            page_ms.append((time.perf_counter() - began) * 1000)
        rows_before, cpu_before, began = int(stack.python(ROWS)), cpu_seconds(stack.workers), time.monotonic()
        console_before, clients_before = cpu_seconds([stack.console]), psutil.Process().cpu_times()
        latencies, in_page, browser_cpu_percent = with_a_browser(stack.url, client, clients, seconds)
        elapsed = time.monotonic() - began
        rows = int(stack.python(ROWS)) - rows_before
        cpu = cpu_seconds(stack.workers) - cpu_before
        console_cpu = cpu_seconds([stack.console]) - console_before
        clients_now = psutil.Process().cpu_times()
        clients_cpu = clients_now.user + clients_now.system - clients_before.user - clients_before.system
        result = {
            "hosts": hosts,
            "instances": instances,
            "clients": clients,
            "sample_seconds": sample_seconds,
            "events": len(latencies),
            "latency_p50_ms": pct(latencies, 50),
            "latency_p95_ms": pct(latencies, 95),
            "browser_events": len(in_page),
            "browser_latency_p50_ms": pct(in_page, 50),
            "browser_latency_p95_ms": pct(in_page, 95),
            "dashboard_page_ms_median": round(statistics.median(page_ms), 1),
            "samples_per_second": round(rows / elapsed, 1),
            "expected_samples_per_second": round(instances / sample_seconds, 1),
            "worker_cpu_ms_per_sample": round(cpu * 1000 / rows, 2) if rows else None,
            "worker_cpu_percent": round(cpu * 100 / elapsed, 1),
            "console_rss_mib": round(psutil.Process(stack.console.pid).memory_info().rss / 2**20, 1),
            # Where the 2 cores went: the console relaying, and this process's protocol clients.
            "console_cpu_percent": round(console_cpu * 100 / elapsed, 1),
            "clients_cpu_percent": round(clients_cpu * 100 / elapsed, 1),
            "browser_cpu_percent": browser_cpu_percent,
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(result), flush=True)
        return result
    finally:
        stack.stop()


def rss_mib(procs: list[subprocess.Popen]) -> float:
    total = 0
    for proc in procs:
        try:
            total += psutil.Process(proc.pid).memory_info().rss
        except psutil.Error:
            pass
    return round(total / 2**20, 1)


def soak(hosts: int, instances: int, clients: int, sample_seconds: int, seconds: float, every: float, **env) -> dict:
    stack = Stack(hosts, instances, sample_seconds, **env)
    points = []
    try:
        stack.start()
        client = stack.session()
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        began = time.monotonic()
        while True:
            elapsed = time.monotonic() - began
            latencies = asyncio.run(dashboard_clients(stack.url, cookie, clients, 20))
            database, table = (int(n) for n in stack.python(SIZES).split())
            point = {
                "minutes": round(elapsed / 60, 1),
                "sample_rows": int(stack.python(ROWS)),
                "sample_table_mib": round(table / 2**20, 1),
                "database_mib": round(database / 2**20, 1),
                "console_rss_mib": rss_mib([stack.console]),
                "workers_rss_mib": rss_mib(stack.workers),
                "latency_p50_ms": pct(latencies, 50),
                "latency_p95_ms": pct(latencies, 95),
            }
            points.append(point)
            print(json.dumps(point), flush=True)
            if elapsed >= seconds:
                break
            time.sleep(max(0.0, min(every, seconds - elapsed) - 20))
        return {"hosts": hosts, "instances": instances, "clients": clients, "env": env, "points": points}
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--instances", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--sample-seconds", type=int, default=5)
    parser.add_argument("--out", default="")
    parser.add_argument("--soak", type=float, default=0, help="seconds of one long run instead")
    parser.add_argument("--every", type=float, default=300)
    parser.add_argument("--raw-retention", type=int, default=0, help="TELEMETRY_RAW_RETENTION for a soak")
    args = parser.parse_args()
    if args.soak:
        env = {"TELEMETRY_RAW_RETENTION": str(args.raw_retention)} if args.raw_retention else {}
        result = soak(args.hosts[0], args.instances[0], args.clients, args.sample_seconds, args.soak, args.every, **env)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
        return
    results = [
        measure(hosts, instances, args.clients, args.seconds, args.sample_seconds)
        for instances in args.instances
        for hosts in args.hosts
    ]
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
