"""Where a decoding step's GPU time goes, kernel by kernel (on a GPU machine).

    python bench/step_profile.py [--model DIR] [--rows 1] [--context 1024] [--out profile.json]

Runs the batched decoder's step eagerly under torch.profiler and sums each kernel's GPU time per
step, next to the replay time of the same step as a CUDA graph: the difference between the two sums
is what launching and gaps cost; the kernels are what fusing or better kernels could save. Also the
step against its bandwidth floor: the weights it reads (all but the token embeddings) at the rate
of the fastest copy on the device (bench/matvec_bench.py), measured in the same process.
"""

import argparse
import collections
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/glm-4.6v-flash-random")
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--kernels", default="auto", help="STEP_KERNELS: auto (Triton), triton, compile, eager")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if not Path(args.model, "config.json").exists():
        subprocess.run([sys.executable, "-m", "inference.smoke_model", args.model, "--full"], cwd=ROOT, check=True)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from inference.engine import Engine

    engine = Engine(args.model, "cuda", slots=16, context=4096, step_kernels=args.kernels)
    engine.load()
    step = engine.decoding.runner
    rows, length = args.rows, args.context
    step.state[0, :rows] = 100
    step.state[1, :rows] = 200
    step.state[2, :rows] = 200
    with torch.inference_mode():
        for _ in range(3):
            step.forward(rows, length)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.steps):
                step.forward(rows, length)
            torch.cuda.synchronize()
        kernels = collections.defaultdict(lambda: [0, 0.0])
        for event in prof.events():
            if event.device_type == torch.autograd.DeviceType.CUDA:
                entry = kernels[event.name]
                entry[0] += 1
                entry[1] += event.device_time
        table = sorted(
            (
                {
                    "kernel": name[:140],
                    "per_step": count / args.steps,
                    "us_per_step": round(total / args.steps, 1),
                    "us_each": round(total / count, 2),
                }
                for name, (count, total) in kernels.items()
            ),
            key=lambda row: -row["us_per_step"],
        )
        kernel_ms = sum(row["us_per_step"] for row in table) / 1000
        launches = sum(row["per_step"] for row in table)
        products = _products(prof, len(step.layers)) if step.kernels == "triton" and rows == 1 else {}

        step.record(rows, length)
        graph, _ = step.graphs[rows, length]
        for _ in range(10):
            graph.replay()
        torch.cuda.synchronize()
        began = time.perf_counter()
        for _ in range(100):
            graph.replay()
        torch.cuda.synchronize()
        graph_ms = (time.perf_counter() - began) * 10
    from bench.matvec_bench import copy_bandwidth

    weight_bytes, read_bytes = step_bytes(engine)
    bandwidth = max(copy_bandwidth().values())
    result = {
        "rows": rows,
        "context": length,
        "step_kernels": step.kernels,
        "dependent_launch": step.dependent_launch,  # STEP_PDL (inference/ops/dependent.py)
        "graph_replay_ms": round(graph_ms, 3),
        "kernel_sum_ms": round(kernel_ms, 3),
        "kernels_per_step": launches,
        "product_us": products,
        "text_weights_gb": round(weight_bytes / 1e9, 2),
        "achieved_tb_s": round(weight_bytes / graph_ms / 1e9, 2),
        "read_gb": round(read_bytes / 1e9, 3),
        "copy_tb_s": round(bandwidth / 1e12, 3),
        # the floor: the weights read once at the rate of the fastest copy on this device
        "floor_ms": round(read_bytes / bandwidth * 1e3, 3),
        "of_floor": round(read_bytes / bandwidth * 1e3 / graph_ms, 3),
        "by_kernel": table,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "by_kernel"}))
    for row in table[:40]:
        print(f"{row['us_per_step']:9.1f} us  {row['per_step']:6.1f}x  {row['us_each']:8.2f} us  {row['kernel']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


def step_bytes(engine) -> tuple[int, int]:
    """(the text model's weights with the LM head, what a step reads of them: every weight but the
    token embeddings, of which it takes a row), in bytes."""
    text = engine.model.model.language_model
    weights = [*text.parameters(), engine.model.lm_head.weight]
    total = sum(p.numel() * p.element_size() for p in weights)
    return total, total - text.embed_tokens.weight.numel() * text.embed_tokens.weight.element_size()


def _products(prof, layers: int) -> dict:
    """Microseconds each of the one-row products (inference/ops/matvec.py), by its place in a layer,
    and the LM head's: they are one kernel, told apart by the order they run in."""
    import torch

    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA and e.name == "_matvec"]
    events.sort(key=lambda e: e.time_range.start)
    names = ("qkv_rotate_store", "out", "gate_up_gated", "down")
    per_step = 4 * layers + 1
    sums = collections.defaultdict(list)
    for i, event in enumerate(events):
        place = i % per_step
        sums["lm_head" if place == per_step - 1 else names[place % 4]].append(event.device_time)
    return {name: round(sum(times) / len(times), 2) for name, times in sums.items()}


if __name__ == "__main__":
    main()
