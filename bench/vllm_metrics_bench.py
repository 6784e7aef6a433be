"""What reading a vLLM /metrics answer costs the host's sampler, each round: a real-sized one, and
8 MiB answers (the most the console reads) a hostile or broken server could send.

    python bench/vllm_metrics_bench.py [--tree <checkout before>] [--tree .] [--out vllm_metrics.json]

Each tree's console.host.vllm.parse_metrics is timed in a process of its own (best of 3 runs).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAP = 8 * 2**20  # console/deadlines.py: an answer is cut off past this


def real_sized() -> str:
    """The shape of a vLLM 0.x /metrics: its histograms' buckets, counters and gauges, and the
    process and Python families around them (about 12 KB)."""
    labels = 'engine="0",model_name="glm-4.6v-flash"'
    lines = []
    for name in (
        "vllm:e2e_request_latency_seconds",
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_prefill_time_seconds",
        "vllm:request_decode_time_seconds",
    ):
        lines += [f"# HELP {name} Histogram.", f"# TYPE {name} histogram"]
        bounds = [0.001 * 2**i for i in range(20)]
        lines += [f'{name}_bucket{{{labels},le="{b:g}"}} {i * 10}.0' for i, b in enumerate(bounds)]
        lines += [f'{name}_bucket{{{labels},le="+Inf"}} 200.0', f"{name}_sum{{{labels}}} 31.5"]
        lines += [f"{name}_count{{{labels}}} 200.0"]
    for name in ("vllm:generation_tokens", "vllm:prompt_tokens", "vllm:request_success", "vllm:num_preemptions"):
        lines += [f"# TYPE {name}_total counter", f"{name}_total{{{labels}}} 12345.0"]
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        lines += [f"# TYPE {name} gauge", f"{name}{{{labels}}} 3.0"]
    for generation in range(3):
        lines.append(f'python_gc_objects_collected_total{{generation="{generation}"}} 1234.0')
    lines += ["# TYPE process_resident_memory_bytes gauge", "process_resident_memory_bytes 2.1e+09"]
    lines += ["# TYPE process_open_fds gauge", "process_open_fds 91.0"]
    return "\n".join(lines) + "\n"


def filled(unit: str) -> str:
    return unit * (CAP // len(unit))


TEXTS = {
    "real-sized": real_sized,
    "8 MiB of other families": lambda: filled('python_gc_objects_collected_total{generation="0"} 123.0\n'),
    "8 MiB of a read family, well formed": lambda: filled(
        '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0"} 1\n'
    ),
    "8 MiB of a read family, each line broken": lambda: filled("vllm:num_requests_running{\n"),
    "8 MiB with one broken line in every 21": lambda: filled(
        "x{\n" + 10 * 'vllm:num_requests_running{engine="0"} 1\n' + 10 * "python_gc_objects_total 1\n"
    ),
}


def one(tree: str) -> dict:
    """Time parse_metrics of `tree` (run in a process whose path starts with it)."""
    import django

    django.setup()
    from console.host.vllm import parse_metrics

    results = {}
    for name, make in TEXTS.items():
        text = make()
        best = min(_timed(parse_metrics, text) for _ in range(3))
        results[name] = {"bytes": len(text), "seconds": round(best, 4)}
    return results


def _timed(parse, text: str) -> float:
    began = time.perf_counter()
    parse(text)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", action="append", help="a checkout whose console to time (default: this one)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    trees = args.tree or [str(Path(__file__).resolve().parent.parent)]
    results = {}
    with tempfile.TemporaryDirectory() as var:
        for tree in trees:
            env = {
                **os.environ,
                "PYTHONPATH": str(Path(tree).resolve()),
                "DJANGO_SETTINGS_MODULE": "console.settings",
                "CONSOLE_VAR_DIR": var,
            }
            out = subprocess.run(
                [sys.executable, __file__, "--one", tree], env=env, capture_output=True, text=True, check=True
            )
            results[tree] = json.loads(out.stdout.strip().splitlines()[-1])
    for tree, timings in results.items():
        print(tree)
        for name, figures in timings.items():
            print(f"  {name:45} {figures['bytes'] / 2**20:6.2f} MiB  {figures['seconds'] * 1000:9.1f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
