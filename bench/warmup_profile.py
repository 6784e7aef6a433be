"""Where a new model process's warm-up goes: the engine loaded as a handover's process loads it, then
its warm-up generation under torch.profiler (the CUDA calls and kernels) and a sampler of the
Python stacks of every thread, then the same generation again (what is left once
everything lazy has been done).

    python bench/warmup_profile.py [--model DIR] [--out warmup.json]

Run it twice: the first run checks the Triton kernels against the eager step and notes it beside
`--state` (as the first process under a supervisor does); the second, like every later process,
skips that check. Writes the real-size random-weight checkpoint if it is missing.
"""

import argparse
import collections
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import checkpoint  # noqa: E402


def frames(frame, depth: int) -> tuple[list[str], str | None]:
    """A stack's innermost `depth` frames, and its innermost frame of inference/ (None outside it)."""
    names, ours = [], None
    while frame is not None:
        code = frame.f_code
        where = f"{Path(code.co_filename).name}:{code.co_name}:{frame.f_lineno}"
        if len(names) < depth:
            names.append(where)
        if ours is None and f"{os.sep}inference{os.sep}" in code.co_filename:
            ours = where
        frame = frame.f_back
    return names, ours


class StackSampler:
    """Every `every` seconds, the innermost frames of every other thread's Python stack (the warm-up
    runs on the scheduler's thread, which torch.profiler does not follow): where its time goes."""

    def __init__(self, every: float = 0.002, depth: int = 4):
        self.every, self.depth = every, depth
        self.counts: collections.Counter = collections.Counter()
        self.ours: collections.Counter = collections.Counter()  # by the innermost frame of inference/
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = threading.get_ident()
        while not self.stop.wait(self.every):
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                names, ours = frames(frame, self.depth)
                if names and not names[0].startswith(("threading.py:wait", "queue.py:get")):
                    self.counts[" < ".join(names)] += 1
                    self.ours[ours or "(outside inference/)"] += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def top(self, rows: int, counts: collections.Counter | None = None) -> list[dict]:
        counts = self.counts if counts is None else counts
        return [{"stack": stack, "seconds": round(n * self.every, 3)} for stack, n in counts.most_common(rows)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/glm-4.6v-flash-random")
    parser.add_argument("--state", default="/tmp/warmup-profile-state.json", help="the supervisor's record path")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the bench itself (smoke model)")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    checkpoint.ensure(args.model, args.device)
    from inference import handover

    os.environ[handover.STATE_ENV] = args.state  # where the kernels' check is noted, as under a supervisor
    checked_before = Path(args.state + handover.KERNELS_CHECKED_SUFFIX).exists()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from inference.engine import Engine
    from inference.settings import Settings

    settings = Settings()
    engine = Engine(
        args.model,
        args.device,
        "",
        "dynamic",
        decoder="batched",
        slots=settings.max_concurrency,
        context=settings.context,
        cuda_graphs=True,
        step_kernels="auto",
    )
    engine.load()
    result = {"kernels_checked_before": checked_before, "load_phases": dict(engine.load_phases)}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    synchronize = torch.cuda.synchronize if args.device == "cuda" else lambda: None
    with profile(activities=activities) as first, StackSampler() as stacks:
        began = time.monotonic()
        engine.warmup()
        synchronize()
        result["first_warmup_s"] = round(time.monotonic() - began, 3)
    result["python_stacks"] = stacks.top(args.rows)
    result["python_by_our_frame"] = stacks.top(args.rows, stacks.ours)
    for key in ("python_by_our_frame", "python_stacks"):
        print(key)
        for row in result[key]:
            print(f"{row['seconds']:7.3f} s  {row['stack']}")
    began = time.monotonic()
    engine.warmup_generation()  # the warm-up's generation again (not its graphs: recorded once)
    synchronize()
    result["second_generation_s"] = round(time.monotonic() - began, 3)
    result["warmup_phases"] = {k: v for k, v in engine.load_phases.items() if k in ("warmup", "cuda_graphs")}
    table = first.key_averages().table(sort_by="cpu_time_total", row_limit=args.rows, max_name_column_width=60)
    print(table)
    result["top_by_cpu_total"] = [
        {"name": e.key, "calls": e.count, "cpu_total_ms": round(e.cpu_time_total / 1000, 2)}
        for e in sorted(first.key_averages(), key=lambda e: -e.cpu_time_total)[: args.rows]
    ]
    print(json.dumps({k: v for k, v in result.items() if not k.startswith(("top_", "python_"))}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    engine.close()  # its scheduler may be recording a prompt's graph: ended before the interpreter ends


if __name__ == "__main__":
    main()
