"""GPU benchmark of the model server against plain transformers `generate`, in one run.

    python bench/inference_bench.py --out results.json [--model DIR]

Without --model it writes the real-size random-weight GLM-4.6V-Flash checkpoint
(inference.smoke_model --full) first. Measures, with one 336x336 image and
about 30 text tokens: time to first token, decode tokens/s at batch 1,
aggregate tokens/s at 1, 4 and 16 concurrent requests, load time from page
cache, `import torch, transformers` time, and server start-to-ready time.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.startup_bench import running_server  # noqa: E402

PROMPT = "Describe this picture in detail, with the colours, the objects and where they are placed."


def image_url():
    from tests.inference.helpers import image_url as make

    return make(336, 336)


def measure_import() -> float:
    code = "import time; t=time.perf_counter(); import torch, transformers; print(time.perf_counter()-t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def baseline(model_dir: str, url: str) -> dict:
    """Plain transformers: load, then generate with the same inputs the server builds."""
    import torch

    from inference.engine import Engine

    engine = Engine(model_dir, "cuda", "bfloat16", decoder="generate")
    began = time.perf_counter()
    engine.load()
    load_seconds = time.perf_counter() - began
    from inference.limits import load_image
    from inference.settings import Settings

    image = load_image(url, Settings())
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]

    def run(new_tokens: int) -> tuple[float, int]:
        prepared = engine.prepare(messages, [image], 1 << 20)
        inputs = {k: v.to("cuda") for k, v in prepared.inputs.items()}
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            out = engine.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        torch.cuda.synchronize()
        return time.perf_counter() - t, out.shape[1] - inputs["input_ids"].shape[1]

    def prepare_seconds() -> float:
        t = time.perf_counter()
        engine.prepare(messages, [image], 1 << 20)
        return time.perf_counter() - t

    run(4)  # warm-up
    ttft = statistics.median(run(1)[0] for _ in range(5))
    prepare = statistics.median(prepare_seconds() for _ in range(5))
    total, produced = run(129)
    prompt_tokens = engine.prepare(messages, [image], 1 << 20).prompt_tokens
    result = {
        "load_seconds": round(load_seconds, 2),
        "prompt_tokens": prompt_tokens,
        "ttft_ms": round(ttft * 1000, 1),
        "prepare_ms": round(prepare * 1000, 1),  # chat template, image preprocessing, tokenizing (CPU)
        "decode_tokens_per_second": round((produced - 1) / (total - ttft), 1),
        "latency_129_tokens_s": round(total, 3),
    }
    engine.model = None  # free the GPU for the next measurement
    torch.cuda.empty_cache()
    return result


def request_log_median(field: str) -> float | None:
    """Median of a field of the server's JSON request log lines (needs BENCH_SERVER_LOG)."""
    path = os.environ.get("BENCH_SERVER_LOG")
    if not path:
        return None
    values = []
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("{") and '"msg": "request"' in line:
            value = json.loads(line).get(field)
            if value is not None:
                values.append(value)
    return statistics.median(values) if values else None


def server_figures(model_dir: str, url: str, kv_cache: str = "dynamic", decoder: str = "batched") -> dict:
    env = {"MAX_CONCURRENCY": "16", "MAX_QUEUE": "64", "KV_CACHE": kv_cache, "DECODER": decoder}
    with running_server(model_dir, 8377, **env) as (base, _, ready_seconds):
        client = httpx.Client(timeout=600)
        body = lambda n: {  # noqa: E731
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": PROMPT}],
                }
            ],
            "max_tokens": n,
        }
        client.post(base + "/v1/chat/completions", json=body(4))  # warm-up

        def timed(n: int) -> tuple[float, int]:
            t = time.perf_counter()
            r = client.post(base + "/v1/chat/completions", json=body(n)).json()
            return time.perf_counter() - t, r["usage"]["completion_tokens"]

        ttft = statistics.median(timed(1)[0] for _ in range(5))
        server_ttft = client.get(base + "/health").json()["timings"]["ttft_p50"]
        prepare = request_log_median("prepare_ms")
        total, produced = timed(129)
        concurrency = {}
        for streams in (1, 4, 8, 16):
            with ThreadPoolExecutor(streams) as pool:
                t = time.perf_counter()
                results = list(pool.map(lambda _: timed(64), range(streams)))
                wall = time.perf_counter() - t
            concurrency[str(streams)] = round(sum(n for _, n in results) / wall, 1)
        health = client.get(base + "/health").json()
        return {
            "start_to_ready_seconds": round(ready_seconds, 2),
            "model_load_seconds": health["load_seconds"],
            "load_phases": health.get("load_phases"),
            "ttft_ms": round(ttft * 1000, 1),
            "ttft_server_p50_ms": round(server_ttft * 1000, 1) if server_ttft else None,
            "prepare_p50_ms": prepare,  # request start to generation submitted, from the server's log
            "decode_tokens_per_second": round((produced - 1) / (total - ttft), 1),
            "latency_129_tokens_s": round(total, 3),
            "aggregate_tokens_per_second_by_concurrency": concurrency,
            "allocator_after": {
                k: health["allocator"].get(k) for k in ("allocated_bytes", "reserved_bytes", "fragmentation")
            },
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--out", default="bench-results.json")
    parser.add_argument("--kv-cache", choices=["dynamic", "static"], default="dynamic")
    parser.add_argument("--decoder", choices=["batched", "generate"], default="batched")
    parser.add_argument("--server-only", action="store_true", help="skip the plain generate baseline")
    args = parser.parse_args()
    model_dir = args.model
    results = {}
    if not model_dir:
        model_dir = "/tmp/glm-4.6v-flash-random"
        if not Path(model_dir, "config.json").exists():
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "inference.smoke_model", model_dir, "--full"], cwd=ROOT, check=True)
            results["write_checkpoint_seconds"] = round(time.perf_counter() - t, 1)
    import torch

    results["device"] = torch.cuda.get_device_name(0)
    results["torch"] = torch.__version__
    results["import_torch_transformers_seconds"] = round(measure_import(), 2)
    url = image_url()
    results["decoder"] = args.decoder
    results["kv_cache"] = args.kv_cache
    results["server"] = server_figures(model_dir, url, args.kv_cache, args.decoder)
    if not args.server_only:
        results["generate_baseline"] = baseline(model_dir, url)
        b, s = results["generate_baseline"], results["server"]
        results["server_overhead_pct_129_tokens"] = round(
            100 * (s["latency_129_tokens_s"] / b["latency_129_tokens_s"] - 1), 1
        )
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
