"""Restart-to-ready through the console vs a bare `docker restart` + wait-for-ready, same
container, same run (Docker runtime, the server image with the smoke model, on this machine).

    python bench/restart_bench.py [--rounds 5]

The console's restart is the worker's code path (request, drain, stop, release check, start,
ready, verify), run in this process; the bare one is what a cron job would do.
"""

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONSOLE_VAR_DIR", tempfile.mkdtemp(prefix="restart-bench-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
os.environ.setdefault("CONSOLE_NETWORK_MODES", "host")  # the bench's container answers on 127.0.0.1
os.environ.setdefault("CONSOLE_BIND_SOURCES", os.environ["CONSOLE_VAR_DIR"])

import django  # noqa: E402

django.setup()

import docker  # noqa: E402
import httpx  # noqa: E402
from django.core.management import call_command  # noqa: E402

from console.instances.models import Host, Instance  # noqa: E402
from console.operations.pipeline import execute  # noqa: E402
from console.operations.request import request_operation  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.host.docker_images import inference_image  # noqa: E402


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("not ready")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    client = docker.from_env()
    image = inference_image(client)
    model = Path(os.environ["CONSOLE_VAR_DIR"]) / "smoke"
    subprocess.run([sys.executable, "-m", "inference.smoke_model", str(model)], cwd=ROOT, check=True)
    port = free_port()
    name = f"ic-bench-{secrets.token_hex(3)}"
    instance = Instance.objects.create(
        name="bench",
        host=Host.objects.get_or_create(name="local")[0],
        runtime="docker",
        container_name=name,
        image=image,
        base_url=f"http://127.0.0.1:{port}",
        admin_token="bench-token",
        run_spec={
            "network_mode": "host",
            "volumes": [f"{model}:/models/smoke:ro"],
            "environment": {
                "MODEL_PATH": "/models/smoke",
                "PORT": str(port),
                "HOST": "127.0.0.1",
                "ADMIN_TOKEN": "bench-token",
            },
        },
        stop_timeout=20,
        ready_timeout=120,
    )
    console, bare = [], []
    try:
        operation, _ = request_operation(instance, "start")
        assert execute(operation.pk).state == "succeeded"
        for _ in range(args.rounds):
            began = time.perf_counter()
            subprocess.run(["docker", "restart", "-t", "20", name], check=True, capture_output=True)
            wait_ready(instance.base_url)
            bare.append(time.perf_counter() - began)

            began = time.perf_counter()
            operation, _ = request_operation(instance, "restart", reason="bench")
            done = execute(operation.pk)
            console.append(time.perf_counter() - began)
            assert done.state == "succeeded", done.error
        steps = {s["name"]: s.get("seconds") for s in done.steps}
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    c, b = statistics.median(console), statistics.median(bare)
    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "console_restart_s": [round(x, 2) for x in console],
                "bare_docker_restart_s": [round(x, 2) for x in bare],
                "median_console_s": round(c, 2),
                "median_bare_s": round(b, 2),
                "overhead_s": round(c - b, 2),
                "overhead_pct": round(100 * (c - b) / b, 1),
                "target": "overhead <= max(0.5 s, 10 %)",
                "met": (c - b) <= max(0.5, 0.1 * b),
                "last_console_steps_s": steps,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
