"""CPU a smoke-model server spends on the same requests, for each checkout given.

    python bench/cpu_threads_bench.py [--tree DIR ...] [--requests 160] [--out cpu_threads.json]

Each --tree is a checkout whose inference server is measured (default: this one), so servers before
and after a change (e.g. 7d274a8: on a CPU, half the cores' threads) are compared in one run on one
machine. Each sends the same mixed requests one after another (text, small and large images,
malformed bodies, as the memory test does); reported: the server process's CPU seconds, the wall
time and the server process's thread count.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.front_door_bench import free_port  # noqa: E402
from bench.startup_bench import running_server  # noqa: E402
from tests.inference.helpers import chat, image_url  # noqa: E402


def measure(tree: Path, model: str, requests: int) -> dict:
    small, big = image_url(112, 112), image_url(448, 336)
    with running_server(model, free_port(), tree=tree, MAX_CONCURRENCY="4") as (base, _, _):
        process = psutil.Process(httpx.get(base + "/health").json()["pid"])
        url = base + "/v1/chat/completions"
        with httpx.Client(timeout=60) as client:
            cpu, began = process.cpu_times(), time.perf_counter()
            for i in range(requests):
                body = (
                    chat(f"text {i} " * (i % 30)),
                    chat("look", [small]),
                    chat("look", [big], max_tokens=16),
                    {"messages": "bad"},
                )[i % 4]
                client.post(url, json=body)
            wall, after = time.perf_counter() - began, process.cpu_times()
        return {
            "commit": subprocess.run(
                ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
            ).stdout.strip(),
            "os_threads": process.num_threads(),
            "cpu_s": round(after.user + after.system - cpu.user - cpu.system, 2),
            "wall_s": round(wall, 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, help="a checkout to measure (repeatable)")
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--out", default="cpu_threads.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = str(Path(tmp) / "smoke")
        subprocess.run([sys.executable, "-m", "inference.smoke_model", model], cwd=ROOT, check=True)
        results = {
            "cores": os.cpu_count(),
            "runs": [measure(tree.resolve(), model, args.requests) for tree in (args.tree or [ROOT])],
        }
    print(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
