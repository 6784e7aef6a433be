"""The console whole on a GPU machine: embedded settings (SQLite), its pipeline, sampler and watchdog
run in this process as a host's worker runs them, over one model server under inference.supervisor
with the real-size random checkpoint on the GPU.

    python bench/console_gpu.py --out console-gpu.json [--model DIR] [--standby]

In order: start; a sampling round (the instance's GPU memory from NVML, the host's snapshot); a
handover restart under 8 streaming clients; a restart in place; a soft reset; a watchdog action (the
model process stopped with SIGSTOP: failed probes, the watchdog's restart, the hung old process
killed after its drain); with `--standby` (HANDOVER_STANDBY) the handover and the watchdog's restart
each wait for the supervisor's standby first; a bare restart in place (POST /admin/restart, then /health/ready) against
the console's; stop, with the release check reading NVML. Every operation's steps, with details.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import checkpoint  # noqa: E402

os.environ.setdefault("CONSOLE_VAR_DIR", tempfile.mkdtemp(prefix="console-gpu-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
os.environ.pop("REDIS_URL", None)  # embedded: SQLite, in-memory broker and channel layer

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from django.core.management import call_command  # noqa: E402

from bench.handover_bench import standby_ready  # noqa: E402
from console.instances.models import Host, Instance  # noqa: E402
from console.operations.models import Operation  # noqa: E402
from console.operations.pipeline import execute  # noqa: E402
from console.operations.request import request_operation  # noqa: E402
from console.telemetry import sampler  # noqa: E402
from console.telemetry.models import Sample  # noqa: E402
from console.watchdog.evaluate import evaluate  # noqa: E402
from console.watchdog.models import Watchdog  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.inference.test_handover import Load  # noqa: E402


def run(instance: Instance, kind: str) -> dict:
    operation, _ = request_operation(instance, kind, reason="console on the GPU")
    execute(operation.pk)
    return summary(Operation.objects.get(pk=operation.pk))


def summary(operation: Operation) -> dict:
    result = {
        "kind": operation.kind,
        "trigger": operation.trigger,
        "state": operation.state,
        "seconds": operation.duration,
        "error": operation.error,
        "steps": [{"name": s["name"], "seconds": s.get("seconds"), "detail": s["detail"]} for s in operation.steps],
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/glm-4.6v-flash-random")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the bench itself (smoke model)")
    parser.add_argument("--out", default="")
    parser.add_argument("--standby", action="store_true", help="HANDOVER_STANDBY: a model process loaded ahead")
    args = parser.parse_args()
    checkpoint.ensure(args.model, args.device)
    call_command("migrate", verbosity=0)
    port = free_port()
    token = "console-gpu-bench"
    instance = Instance.objects.create(
        name="glm-gpu",
        host=Host.objects.get_or_create(name="local")[0],
        runtime=Instance.Runtime.PROCESS,
        command=[sys.executable, "-m", "inference.supervisor"],
        working_dir=str(ROOT),
        env={
            "MODEL_PATH": args.model,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "ADMIN_TOKEN": token,
            "DEVICE": args.device,
            "DRAIN_TIMEOUT": "10",
            "HANDOVER_STANDBY": "1" if args.standby else "0",
            "PATH": os.environ["PATH"],
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        },
        base_url=f"http://127.0.0.1:{port}",
        admin_token=token,
        gpu_indices=[0] if args.device == "cuda" else [],
        handover=True,
        restart_in_place=True,
        drain_timeout=10,
        stop_timeout=30,
        ready_timeout=600,
    )
    result: dict = {"operations": {}}
    try:
        result["operations"]["start"] = run(instance, "start")
        sampler.sample_host("local")
        sample = Sample.objects.filter(instance=instance).latest("at")
        result["sample"] = {
            "status": sample.status,
            "gpu_used": sample.gpu_used,
            "gpu_total": sample.gpu_total,
            "reserved": sample.reserved,
            "nvml": sample.data.get("nvml"),
        }
        result["host_gpus"] = Host.objects.get(name="local").gpus
        print(json.dumps(result["sample"]), flush=True)

        if args.standby:
            result["standby_ready_after_start_s"] = standby_ready(instance.base_url)
        load = Load(instance.base_url, clients=8)
        time.sleep(3)
        result["operations"]["handover"] = run(instance, "restart")
        time.sleep(2)
        outcomes = load.finish()
        result["handover_load"] = {"requests": len(outcomes), "failed": [o for o in outcomes if o[0] != "ok"][:5]}
        print(json.dumps(result["handover_load"]), flush=True)

        Instance.objects.filter(pk=instance.pk).update(handover=False)
        instance.refresh_from_db()
        result["operations"]["restart_in_place"] = run(instance, "restart")
        result["operations"]["soft_reset"] = run(instance, "soft_reset")

        # The watchdog: the model process hangs; failed probes; the watchdog restarts it (a handover,
        # whose old process, still stopped, is killed once it outlives its drain).
        Instance.objects.filter(pk=instance.pk).update(handover=True)
        instance.refresh_from_db()
        Watchdog.objects.create(instance=instance, liveness_failures=2, startup_grace_seconds=0, backoff_seconds=0)
        if args.standby:
            standby_ready(instance.base_url)
        sampler.sample_host("local")  # as beat does every few seconds: the sample names the supervisor
        hung = httpx.get(instance.base_url + "/health", timeout=5).json()["pid"]
        os.kill(hung, signal.SIGSTOP)
        began = time.monotonic()
        acted = None
        while acted is None and time.monotonic() - began < 120:
            sampler.sample_host("local")
            found = evaluate(instance)
            acted = found if isinstance(found, Operation) else None
        if acted is None:
            raise RuntimeError("the watchdog did not act on a hung model process within 120 s")
        execute(acted.pk)
        result["operations"]["watchdog"] = summary(Operation.objects.get(pk=acted.pk))
        result["watchdog_detected_after_s"] = round(time.monotonic() - began, 2)

        began = time.monotonic()
        response = httpx.post(
            instance.base_url + "/admin/restart", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert response.status_code == 202, response.text
        old = response.json()["pid"]
        while True:
            try:
                health = httpx.get(instance.base_url + "/health", timeout=2).json()
                if health["pid"] != old and health["state"] == "ready":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        result["bare_restart_in_place_s"] = round(time.monotonic() - began, 3)
        print("bare restart in place", result["bare_restart_in_place_s"], flush=True)
        result["operations"]["stop"] = run(instance, "stop")
    finally:
        from console.host.process import ProcessRuntime

        ProcessRuntime().stop(instance, timeout=30)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
