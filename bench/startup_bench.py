"""Where the model server's start-up time goes, on a GPU machine with the weights in page cache.

    python bench/startup_bench.py [--model DIR] [--out startup.json]

Each figure comes from a fresh process: `import torch`, `import transformers` with the GLM-4V
classes, `from_pretrained` onto the GPU, safetensors' own `load_file` onto the GPU, the server's
reader (inference/weights.py), and the server's process start to /health/ready with its own load
phases, with the weights prefetched (the default) and read by from_pretrained after the import;
then the server under inference.supervisor: its first start, and `POST /admin/restart` to a new
model process ready, which skips the import.

    python bench/startup_bench.py --parts supervisor     # one part: imports, servers, supervisor, coldstart
    python bench/startup_bench.py --parts coldstart --repeat 4 --tree A --tree B

`coldstart`: the supervisor's whole start (launched to /health/ready, the weight holder's on a GPU),
`--repeat` times for each `--tree` (a checkout; default this one), the trees taking turns, so two
versions are compared on one machine in one run.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

IMPORT_TORCH = "import time; t=time.perf_counter(); import torch; print(time.perf_counter()-t)"
IMPORT_TRANSFORMERS = (
    "import time, torch; t=time.perf_counter(); "
    "from transformers import Glm4vForConditionalGeneration, AutoTokenizer, AutoImageProcessor; "
    "print(time.perf_counter()-t)"
)
CUDA_LIBRARIES = (
    "import time, torch; from inference.engine import _start_cuda_libraries; t=time.perf_counter(); "
    "_start_cuda_libraries('cuda'); print(time.perf_counter()-t)"
)
IMPORT_BESIDE_CUDA = (  # the server's order: CUDA libraries start on a thread while transformers imports
    "import time, threading, torch; from inference.engine import _start_cuda_libraries; t=time.perf_counter(); "
    "c=threading.Thread(target=_start_cuda_libraries, args=('cuda',)); c.start(); "
    "from transformers import Glm4vForConditionalGeneration, AutoTokenizer, AutoImageProcessor; "
    "c.join(); print(time.perf_counter()-t)"
)
IMPORT_BESIDE_PREFETCH = (  # the server's order: weights read on threads while transformers imports
    "import sys, time, torch; from inference.weights import Prefetch; t=time.perf_counter(); "
    "p=Prefetch(sys.argv[1], 'cuda'); "
    "from transformers import Glm4vForConditionalGeneration, AutoTokenizer, AutoImageProcessor; "
    "i=time.perf_counter()-t; p.result(); print(i)"
)
FROM_PRETRAINED = (
    "import sys, time, torch; from transformers import Glm4vForConditionalGeneration; "
    "t=time.perf_counter(); m=Glm4vForConditionalGeneration.from_pretrained(sys.argv[1], dtype=torch.bfloat16, "
    "device_map='cuda'); torch.cuda.synchronize(); print(time.perf_counter()-t)"
)
RAW = (
    "import sys, time, glob, torch; from safetensors.torch import load_file; t=time.perf_counter(); "
    "n=sum(v.numel()*v.element_size() for f in sorted(glob.glob(sys.argv[1]+'/*.safetensors')) "
    "for v in load_file(f, device='cuda').values()); torch.cuda.synchronize(); print(time.perf_counter()-t)"
)
PREFETCH = (
    "import sys, time, torch; from inference.weights import read_state_dict; t=time.perf_counter(); "
    "s=read_state_dict(sys.argv[1], 'cuda'); torch.cuda.synchronize(); print(time.perf_counter()-t)"
)


def seconds(code: str, *args: str, **env: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return round(float(out.stdout.strip().splitlines()[-1]), 2)


@contextlib.contextmanager
def running_server(
    model: str, port: int, poll: float = 0.1, module: str = "inference.server", tree: Path = ROOT, **env: str
):
    """Start `python -m <module>` (the server, or the supervisor) of the checkout `tree` and wait for ready; yields
    (base URL, seconds to live, seconds to ready) and stops it on exit. Its output goes to BENCH_SERVER_LOG when that
    is set."""
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=tree,
        env={**os.environ, "MODEL_PATH": model, "PORT": str(port), **env},
        stdout=open(os.environ["BENCH_SERVER_LOG"], "a") if os.environ.get("BENCH_SERVER_LOG") else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        live = None
        while True:
            try:
                if live is None and httpx.get(base + "/health/live", timeout=1).status_code == 200:
                    live = time.perf_counter() - began
                if live is not None and httpx.get(base + "/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("the server exited during start")
            # Readiness polled as an orchestrator would (the console: every 0.25 s at most), since
            # every answer briefly takes the interpreter from the loading thread; ready is reported
            # at most `poll` seconds late. (50 Hz against 10 Hz: 17.05 s against 16.88 s, one run.)
            time.sleep(0.02 if live is None else poll)
        ready = time.perf_counter() - began
        yield base, live or ready, ready
    finally:
        proc.terminate()
        proc.wait(60)


def server_start(model: str, port: int = 8378, poll: float = 0.1, **env: str) -> dict:
    with running_server(model, port, poll, **env) as (base, live, ready):
        health = httpx.get(base + "/health", timeout=5).json()
        return {"live_s": round(live, 2), "ready_s": round(ready, 2), "load_phases": health["load_phases"]}


def supervised_restarts(model: str, restarts: int = 3, port: int = 8379) -> dict:
    """Start under the supervisor, then restart the model process in place `restarts` times: seconds
    from `POST /admin/restart` to the new process's /health/ready, and its load phases."""
    token = {"Authorization": "Bearer bench"}
    with running_server(model, port, module="inference.supervisor", ADMIN_TOKEN="bench") as (base, live, ready):
        result = {"first_start": {"live_s": round(live, 2), "ready_s": round(ready, 2)}, "restarts": []}
        for _ in range(restarts):
            old = httpx.get(base + "/health", timeout=5).json()["pid"]
            began = time.perf_counter()
            assert httpx.post(base + "/admin/restart", headers=token, timeout=10).status_code == 202
            while True:
                if time.perf_counter() - began > 300:
                    raise RuntimeError("no new model process ready 300 s after the restart")
                try:
                    health = httpx.get(base + "/health", timeout=2).json()
                    if health["pid"] != old and health["state"] == "ready":
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
            ready_s = round(time.perf_counter() - began, 2)
            result["restarts"].append({"restart_to_ready_s": ready_s, "load_phases": health["load_phases"]})
            print("supervised restart", ready_s, json.dumps(health["load_phases"]), flush=True)
        return result


def cold_starts(model: str, trees: list[Path], repeat: int, port: int = 8380) -> dict:
    """The supervisor launched to ready, `repeat` times per tree, in turns: seconds, and the serving
    process's load phases."""
    names = {tree: os.path.relpath(tree, ROOT) for tree in trees}  # no machine paths in results
    runs: dict[str, list] = {name: [] for name in names.values()}
    for _ in range(repeat):
        for tree, name in names.items():
            with running_server(model, port, module="inference.supervisor", tree=tree) as (base, live, ready):
                health = httpx.get(base + "/health", timeout=5).json()
            runs[name].append({"ready_s": round(ready, 2), "load_phases": health["load_phases"]})
            print("cold start", name, round(ready, 2), json.dumps(health["load_phases"]), flush=True)
            time.sleep(2)  # the ended processes' GPU memory released
    return {
        tree: {
            "ready_s": [run["ready_s"] for run in done],
            "median_s": statistics.median(r["ready_s"] for r in done),
            "runs": done,
        }
        for tree, done in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/glm-4.6v-flash-random")
    parser.add_argument("--out", default="startup.json")
    parser.add_argument("--parts", default="imports,servers,supervisor")
    parser.add_argument("--tree", action="append", type=Path, help="coldstart: a checkout to start (repeatable)")
    parser.add_argument("--repeat", type=int, default=3, help="coldstart: starts per tree")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not Path(args.model, "config.json").exists():
        subprocess.run([sys.executable, "-m", "inference.smoke_model", args.model, "--full"], cwd=ROOT, check=True)
    subprocess.run(f"cat {args.model}/*.safetensors > /dev/null", shell=True, check=True)  # page cache
    results = {}
    if "imports" in parts:
        results.update(imports(args.model))
        print(json.dumps(results), flush=True)
    if "servers" in parts:
        for loader, poll in (("prefetch", 0.1), ("transformers", 0.1), ("prefetch", 0.1), ("prefetch", 0.02)):
            started = server_start(args.model, poll=poll, WEIGHT_LOADER=loader)
            results.setdefault("server", {}).setdefault(f"{loader}, ready polled every {poll} s", []).append(started)
            print(loader, poll, json.dumps(started), flush=True)
    if "supervisor" in parts:
        results["supervisor"] = supervised_restarts(args.model)
    if "coldstart" in parts:
        results["coldstart"] = cold_starts(args.model, [t.resolve() for t in args.tree or [ROOT]], args.repeat)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def imports(model: str) -> dict:
    return {
        "import_torch_s": seconds(IMPORT_TORCH),
        "import_transformers_glm4v_s": seconds(IMPORT_TRANSFORMERS),
        "cuda_libraries_s": seconds(CUDA_LIBRARIES),
        "import_transformers_beside_cuda_libraries_s": seconds(IMPORT_BESIDE_CUDA),
        "import_transformers_beside_weights_reader_s": seconds(IMPORT_BESIDE_PREFETCH, model),
        "safetensors_to_gpu_s": seconds(RAW, model),
        "weights_reader_s": seconds(PREFETCH, model),
        "from_pretrained_s": seconds(FROM_PRETRAINED, model),
    }


if __name__ == "__main__":
    main()
