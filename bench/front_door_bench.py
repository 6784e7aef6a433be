"""/health under a flood of large requests: how fast the console's probe is answered.

    python bench/front_door_bench.py [--tree DIR ...] [--clients 30] [--seconds 20] [--out front_door.json]

Each --tree is a checkout whose inference server is measured (default: this one), so the server
before and after a change are compared in one run on one machine. A smoke-model server (CPU) with
MAX_CONCURRENCY=4 and MAX_QUEUE=16 is probed every 100 ms for 10 s at rest, then while `clients`
threads send 8 MB chat requests back to back. A probe counts as failed past 3 s (the sampler's
timeout: past it the watchdog's liveness rule sees a failure).
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PROBE_TIMEOUT = 3.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def probes(url: str, seconds: float) -> list[float | None]:
    """/health latencies in ms (None: no answer within the probe timeout) for `seconds`."""
    found, end = [], time.monotonic() + seconds
    with httpx.Client() as client:
        while time.monotonic() < end:
            began = time.perf_counter()
            try:
                ok = client.get(url + "/health", timeout=PROBE_TIMEOUT).status_code < 500
                found.append((time.perf_counter() - began) * 1000 if ok else None)
            except httpx.HTTPError:
                found.append(None)
            time.sleep(0.1)
    return found


def summary(latencies: list[float | None]) -> dict:
    answered = sorted(v for v in latencies if v is not None)
    pick = lambda q: round(answered[min(len(answered) - 1, int(q * len(answered)))], 1) if answered else None  # noqa: E731
    return {
        "probes": len(latencies),
        "failed": len(latencies) - len(answered),
        "p50_ms": round(statistics.median(answered), 1) if answered else None,
        "p95_ms": pick(0.95),
        "max_ms": round(answered[-1], 1) if answered else None,
    }


def measure(tree: Path, model: Path, clients: int, seconds: float) -> dict:
    port = free_port()
    env = {
        **{k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ},
        "MODEL_PATH": str(model),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "MAX_CONCURRENCY": "4",
        "MAX_QUEUE": "16",
        "MAX_PROMPT_TOKENS": "600",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "inference.server"],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(900):
            try:
                if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        rest = probes(url, 10)
        body = json.dumps({"messages": [{"role": "user", "content": "word " * 1_600_000}], "max_tokens": 4})
        stop, statuses = threading.Event(), []

        def flood():
            with httpx.Client(timeout=120) as client:
                while not stop.is_set():
                    try:
                        response = client.post(
                            url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
                        )
                        statuses.append(response.status_code)
                    except httpx.HTTPError:
                        statuses.append(0)

        senders = [threading.Thread(target=flood, daemon=True) for _ in range(clients)]
        for sender in senders:
            sender.start()
        time.sleep(1)
        flooded = probes(url, seconds)
        stop.set()
        for sender in senders:
            sender.join(130)
        return {
            "tree": str(tree),
            "at_rest": summary(rest),
            "flooded": summary(flooded),
            "flood_requests": len(statuses),
            "flood_statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        }
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, help="a checkout to measure (repeatable)")
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--out", default="front_door.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "smoke"
        subprocess.run([sys.executable, "-m", "inference.smoke_model", str(model)], cwd=ROOT, check=True)
        results = [measure(tree.resolve(), model, args.clients, args.seconds) for tree in (args.tree or [ROOT])]
    print(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
