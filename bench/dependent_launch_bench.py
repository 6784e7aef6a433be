"""The decoding step with its Triton kernels launched dependent (STEP_PDL=auto) and plainly
(STEP_PDL=off), side by side in one process on a GPU machine.

    python bench/dependent_launch_bench.py [--model DIR] [--rounds 2] [--out dependent.json]

For each form and each of 1 and 16 rows (1,024 positions): the graph replay's milliseconds (best of
three runs of 100 replays), at one row against the bandwidth floor (the weights a step reads at the
fastest copy's rate, bench/step_profile.py), and whether the form gives the plain form's logits bit
for bit, eagerly and recorded, on each of 50 replays.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FORMS = ("off", "auto")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/glm-4.6v-flash-random")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    from bench.checkpoint import ensure

    ensure(args.model, "cuda")
    import torch
    import transformers
    import triton

    from bench.matvec_bench import copy_bandwidth
    from bench.step_profile import step_bytes
    from inference.engine import Engine
    from inference.ops import dependent

    engine = Engine(args.model, "cuda", slots=16, context=4096)
    engine.load()
    step = engine.decoding.runner
    _, read_bytes = step_bytes(engine)
    for row in range(16):
        step.state[:, row] = torch.tensor([100 + row, 200, 200])
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "transformers": transformers.__version__,
        "step_kernels": step.kernels,
        "runs": [],
    }
    plain: dict = {}
    with torch.inference_mode():
        bandwidth = max(copy_bandwidth().values())
        floor_ms = read_bytes / bandwidth * 1e3
        result.update(copy_tb_s=round(bandwidth / 1e12, 3), floor_ms=round(floor_ms, 3))
        for round_ in range(args.rounds):
            for form in FORMS:
                os.environ["STEP_PDL"] = form
                dependent._capable.cache_clear()
                for rows in (1, 16):
                    run = _measure(step, rows, args.context, plain)
                    run.update(round=round_, form=form, rows=rows)
                    if rows == 1:
                        run["of_floor"] = round(floor_ms / run["ms"], 4)
                    result["runs"].append(run)
                    print(json.dumps(run), flush=True)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


def _measure(step, rows: int, length: int, plain: dict) -> dict:
    """One form's step at `rows`: replay ms and its logits against the plain form's (the first
    measured, kept in `plain`)."""
    import torch

    eager = step.forward(rows, length).clone()
    plain.setdefault(rows, eager)
    step.graphs.pop((rows, length), None)
    step.record(rows, length)
    graph, out = step.graphs[rows, length]
    graph.replay()
    first = out.clone()
    steady = True
    for _ in range(50):
        graph.replay()
        steady = steady and torch.equal(out, first)
    for _ in range(10):
        graph.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        for _ in range(100):
            graph.replay()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - began) * 10)
    return {
        "ms": round(best, 4),
        "eager_as_plain": bool(torch.equal(eager, plain[rows])),
        "recorded_as_plain": bool(torch.equal(first, plain[rows])),
        "replays_identical": steady,
    }


if __name__ == "__main__":
    main()
