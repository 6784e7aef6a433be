"""What clients see of a restart: steady state, a restart in place and a handover, each under the
same continuous streaming load, one server under inference.supervisor, one run.

    python bench/handover_bench.py --out handover.json                  # the smoke model (CPU or GPU)
    python bench/handover_bench.py --full --out handover.json           # the real GLM-4.6V-Flash shape
    python bench/handover_bench.py --full --hold auto,off               # with the weight holder, then without
    python bench/handover_bench.py --full --hold auto --room-slots 2.5  # a GPU with room for 2.5 slots only
    python bench/handover_bench.py --full --hold auto --new-weights     # the checkpoint changed: new weights
    python bench/handover_bench.py --full --hold auto --standby on,off  # a standby loaded ahead, then none

Each of the `--clients` clients streams one chat answer (`--max-tokens`) after another on its own
keep-alive connection. For each phase: requests, failures by kind (HTTP status or exception),
latency and time to first token p50/p99 of the requests that began in it; for the restarts, the
seconds from the request to the new process serving. Per HOLD_WEIGHTS mode (`--hold`) and
HANDOVER_STANDBY (`--standby`), one server each, one after the other: its start to ready with the
load's phases, the handover's phases, and what each process holds on the GPU (nvidia-smi) right after
the handover.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKEN = {"Authorization": "Bearer bench"}
CUDA_CONTEXT_BYTES = 600 * 2**20  # about what a process's CUDA context takes on the H200


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


class Load:
    def __init__(self, base: str, clients: int, max_tokens: int):
        self.url = base + "/v1/chat/completions"
        self.body = {
            "messages": [{"role": "user", "content": "Describe the picture in detail."}],
            "max_tokens": max_tokens,
            "stream": True,
        }
        self.stop = threading.Event()
        self.records: list[dict] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def client(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self.stop.is_set():
                began = time.perf_counter()
                first = None
                outcome = "ok"
                try:
                    with client.stream("POST", self.url, json=self.body) as response:
                        if response.status_code != 200:
                            outcome = f"HTTP {response.status_code}"
                        chunks = 0
                        for line in response.iter_lines():
                            if line.startswith("data: {"):
                                chunks += 1
                                first = first or time.perf_counter()
                        if outcome == "ok" and not chunks:
                            outcome = "empty"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                ended = time.perf_counter()
                with self.lock:
                    self.records.append(
                        {"began": began, "ended": ended, "ttft": first and first - began, "outcome": outcome}
                    )
                if outcome != "ok":
                    time.sleep(0.05)  # as a client's retry would

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)

    def summary(self, since: float, until: float) -> dict:
        chosen = [r for r in self.records if since <= r["began"] < until]
        ok = [r for r in chosen if r["outcome"] == "ok"]
        failures: dict[str, int] = {}
        for r in chosen:
            if r["outcome"] != "ok":
                failures[r["outcome"]] = failures.get(r["outcome"], 0) + 1
        latency = [r["ended"] - r["began"] for r in ok]
        ttft = [r["ttft"] for r in ok if r["ttft"]]
        return {
            "requests": len(chosen),
            "failed": len(chosen) - len(ok),
            "failures": failures,
            "latency_p50_s": percentile(latency, 0.5),
            "latency_p99_s": percentile(latency, 0.99),
            "ttft_p50_s": percentile(ttft, 0.5),
            "ttft_p99_s": percentile(ttft, 0.99),
            "mean_latency_s": round(statistics.fmean(latency), 4) if latency else None,
        }


def health(base: str) -> dict | None:
    try:
        return httpx.get(base + "/health", timeout=5).json()
    except httpx.HTTPError:
        return None


def new_process_ready(base: str, old_pid: int, began: float, timeout: float = 600) -> float:
    """Seconds from `began` (perf_counter) until a process other than `old_pid` answers /health ready."""
    while time.perf_counter() - began < timeout:
        now = health(base)
        if now and now["pid"] != old_pid and now["state"] == "ready":
            return time.perf_counter() - began
        time.sleep(0.02)
    raise RuntimeError(f"no new process {timeout} s after the request")


def restart_in_place(base: str) -> float:
    old = health(base)["pid"]
    began = time.perf_counter()
    assert httpx.post(base + "/admin/restart", headers=TOKEN, timeout=10).status_code == 202
    return new_process_ready(base, old, began)


def handover(base: str) -> dict:
    began = time.perf_counter()
    answer = httpx.post(base + "/admin/handover", headers=TOKEN, timeout=10)
    assert answer.status_code == 202, answer.text
    number = answer.json()["handover"]
    while time.perf_counter() - began < 600:
        record = (health(base) or {}).get("supervisor") or {}
        last = next((h for h in record.get("handovers", []) if h["id"] == number), None)
        if last and last["state"] != "running":
            serving = next((p for p in last["phases"] if p["name"] == "new process serving"), None)
            return {
                "state": last["state"],
                "why": last["why"],
                "phases": last["phases"],
                "new_process_serving_s": serving and serving["seconds"],
                "request_to_done_s": round(time.perf_counter() - began, 3),
            }
        time.sleep(0.05)
    raise RuntimeError("the handover did not end in 600 s")


def standby_ready(base: str, timeout: float = 600) -> float:
    """Seconds until the supervisor's standby (HANDOVER_STANDBY) is loaded."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        standby = ((health(base) or {}).get("supervisor") or {}).get("standby") or {}
        if standby.get("state") == "ready":
            return round(time.perf_counter() - began, 3)
        if standby.get("state") == "failed":
            raise RuntimeError(f"the standby failed: {standby.get('why')}")
        time.sleep(0.05)
    raise RuntimeError(f"no standby ready in {timeout} s")


def gpu_processes() -> list[dict]:
    """Each process's GPU memory as the driver sees it (nvidia-smi); [] without one."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = [line.split(",") for line in out.splitlines() if line.strip()]
    return [{"pid": int(pid), "used_mib": int(used)} for pid, used in rows]


@contextlib.contextmanager
def gpu_tenant(leave_bytes: int):
    """Another tenant of the GPU: a process holding all of its free memory but `leave_bytes`."""
    code = (
        "import sys, torch; free, _ = torch.cuda.mem_get_info(); n = max(0, free - int(sys.argv[1]));"
        " x = torch.empty(n, dtype=torch.uint8, device='cuda'); print(n, flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(leave_bytes)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield int(proc.stdout.readline() or 0)
    finally:
        proc.stdin.close()
        proc.wait(60)


def grown(base: str, began: float, timeout: float = 120) -> float | None:
    """Seconds from `began` until the serving process has every KV cache slot it asks for."""
    while time.perf_counter() - began < timeout:
        decoder = (health(base) or {}).get("decoder") or {}
        if decoder.get("slots") and decoder.get("slots") == decoder.get("slots_wanted"):
            return round(time.perf_counter() - began, 3)
        time.sleep(0.05)
    return None


@contextlib.contextmanager
def supervised(model: str, port: int, **env: str):
    log = open(os.environ.get("BENCH_SERVER_LOG", os.devnull), "a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "inference.supervisor"],
        cwd=ROOT,
        env={**os.environ, "MODEL_PATH": model, "PORT": str(port), "ADMIN_TOKEN": "bench", **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    began = time.perf_counter()
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            now = health(base)
            if now and now["state"] == "ready":
                break
            if proc.poll() is not None:
                raise RuntimeError("the server exited during start")
            time.sleep(0.1)
        yield base, round(time.perf_counter() - began, 3)
    finally:
        proc.terminate()
        proc.wait(120)


def room(model: str, mode: str, slots: float) -> int:
    """What a handover's new process needs free for `slots` KV cache slots: the weights unless held,
    HANDOVER_RESERVE_BYTES, the slots, and its CUDA context (taken before it counts)."""
    from inference import handover
    from inference.settings import Settings

    settings = Settings()
    weights = 0 if mode in ("auto", "on") else handover.weights_bytes(model)
    slot = handover.kv_slot_bytes(model, settings.context, 2)
    return weights + settings.handover_reserve_bytes + int(slots * slot) + CUDA_CONTEXT_BYTES


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="")
    parser.add_argument("--full", action="store_true", help="the real GLM-4.6V-Flash shape, random weights")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--steady", type=float, default=20, help="seconds of steady state measured")
    parser.add_argument("--port", type=int, default=8391)
    parser.add_argument("--out", default="")
    parser.add_argument("--hold", default="auto", help="HOLD_WEIGHTS modes, one server each: auto,off")
    parser.add_argument("--standby", default="off", help="HANDOVER_STANDBY, one server each per --hold mode: on,off")
    parser.add_argument(
        "--new-weights", action="store_true", help="the checkpoint's files touched before the handover: new weights"
    )
    parser.add_argument(
        "--room-slots",
        type=float,
        default=0,
        help="before each handover another process takes the GPU's free memory but what leaves the new"
        " process room for this many KV cache slots (e.g. 2.5 of 4): the smaller cache, then its growth",
    )
    args = parser.parse_args()
    model = args.model or (
        "/tmp/glm-4.6v-flash-random" if args.full else str(Path(tempfile.gettempdir()) / "handover-bench-smoke")
    )
    if not (Path(model) / "config.json").exists():
        command = [sys.executable, "-m", "inference.smoke_model", model] + (["--full"] if args.full else [])
        subprocess.run(command, cwd=ROOT, check=True)

    result: dict = {"model": model, "clients": args.clients, "max_tokens": args.max_tokens}
    configurations = [(mode, standby) for mode in args.hold.split(",") for standby in args.standby.split(",")]
    for number, (mode, standby) in enumerate(configurations):
        # The first one's keys at the top level (as earlier runs wrote them), the others by name.
        name = f"hold_{mode}" + ("_standby" if standby == "on" else "")
        part = result if number == 0 else result.setdefault(name, {})
        env = {"DRAIN_TIMEOUT": "60", "HOLD_WEIGHTS": mode, "HANDOVER_STANDBY": "1" if standby == "on" else "0"}
        with supervised(model, args.port, **env) as (base, start_s):
            first = health(base)
            part.update(hold_weights=mode, standby=standby, start_to_ready_s=start_s, load_phases=first["load_phases"])
            if standby == "on":
                part["standby_ready_after_ready_s"] = standby_ready(base)
            part["device"], part["dtype"], part["weights"] = first["device"], first["dtype"], first.get("weights")
            load = Load(base, args.clients, args.max_tokens)
            try:
                time.sleep(3)  # every client past its first request
                began = time.perf_counter()
                time.sleep(args.steady)
                part["steady"] = load.summary(began, time.perf_counter())

                if number == 0:
                    began = time.perf_counter()
                    part["restart_in_place_to_ready_s"] = round(restart_in_place(base), 3)
                    time.sleep(2)
                    part["restart_in_place"] = load.summary(began, time.perf_counter())
                    time.sleep(3)

                with contextlib.ExitStack() as tenant:
                    if args.room_slots:
                        part["tenant_bytes"] = tenant.enter_context(gpu_tenant(room(model, mode, args.room_slots)))
                    if args.new_weights:  # the checkpoint "changed": a second holder reads it
                        for shard in Path(model).glob("*.safetensors"):
                            os.utime(shard)
                    if standby == "on":
                        standby_ready(base)  # the one forked beside the restart in place's process
                    began = time.perf_counter()
                    part["handover"] = handover(base)
                    part["gpu_processes_after"] = gpu_processes()
                    if args.room_slots:
                        part["kv_cache_grown_s"] = grown(base, began)
                    time.sleep(2)
                    part["during_handover"] = load.summary(began, time.perf_counter())
                    part["gpu_processes_2s_after"] = gpu_processes()
                after = health(base) or {}
                part["after"] = {k: after.get(k) for k in ("pid", "load_phases", "weights", "allocator", "decoder")}
                part["after"]["holder"] = (after.get("supervisor") or {}).get("holder")
            finally:
                load.finish()
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
