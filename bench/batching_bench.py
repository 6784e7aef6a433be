"""The batched decoder without HTTP, on a GPU: prefill time of the benchmark prompt, the decoding
step (one CUDA graph replay) by batch size, and tokens/s with concurrent requests.

    python bench/batching_bench.py [--model DIR] [--slots 16] [--out batching.json]
"""

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import checkpoint  # noqa: E402

PROMPT = "Describe this picture in detail, with the colours, the objects and where they are placed."


def warm_engine(model: str, device: str, **options):
    """The batched decoder's engine on `device` (bfloat16 on a GPU, float32 on a CPU), loaded and warmed up
    as the server does; the checkpoint written first where it is missing (full-size on a GPU)."""
    checkpoint.ensure(model, device)
    from inference.engine import Engine

    dtype = "bfloat16" if device == "cuda" else "float32"
    engine = Engine(model, device, dtype, decoder="batched", **options)
    engine.load()
    engine.warmup()
    return engine


class Sink:
    def __init__(self):
        self.count = 0
        self.first = None
        self.finished = threading.Event()
        self.error = None

    def tokens(self, ids):
        if self.first is None:
            self.first = time.perf_counter()
        self.count += len(ids)

    def done(self, error):
        self.error = error
        self.finished.set()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/glm-4.6v-flash-random")
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--out", default="batching.json")
    parser.add_argument("--kernels", default="auto", help="STEP_KERNELS: auto (Triton), triton, compile, eager")
    args = parser.parse_args()
    if not Path(args.model, "config.json").exists():
        subprocess.run([sys.executable, "-m", "inference.smoke_model", args.model, "--full"], cwd=ROOT, check=True)
    import torch

    from bench.inference_bench import image_url
    from inference.engine import Engine
    from inference.limits import load_image
    from inference.settings import Settings

    engine = Engine(
        args.model, "cuda", "bfloat16", decoder="batched", slots=args.slots, context=10240, step_kernels=args.kernels
    )
    engine.load()
    engine.warmup()
    step = engine.decoding.runner
    image = load_image(image_url(), Settings())
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]

    def submit(tokens: int) -> tuple[Sink, float]:
        sink = Sink()
        prepared = engine.prepare(messages, [image], 1 << 20)
        began = time.perf_counter()
        engine.generate(prepared, sink, max_new_tokens=tokens, temperature=0, top_p=1, should_stop=lambda: False)
        return sink, began

    split = []

    def first_token() -> float:
        sink, began = submit(1)
        sink.finished.wait(60)
        split.append(dict(engine.decoding.scheduler.last_prefill))
        return sink.first - began

    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "slots": args.slots}
    results["load_phases"] = engine.load_phases
    results["graphs"] = len(step.graphs)
    results["record_seconds"] = round(step.record_seconds, 2)
    results["prefill_first_token_ms"] = round(1000 * statistics.median(first_token() for _ in range(7)), 1)
    results["first_token_split_ms"] = {
        key: round(statistics.median(part[key] for part in split), 1) for key in split[0]
    }

    def gpu_ms(call) -> float:
        def once() -> float:
            inputs = {k: v.to("cuda") for k, v in engine.prepare(messages, [image], 1 << 20).inputs.items()}
            torch.cuda.synchronize()
            began = time.perf_counter()
            with torch.inference_mode():
                call(inputs)
            torch.cuda.synchronize()
            return time.perf_counter() - began

        once()
        return round(1000 * statistics.median(once() for _ in range(7)), 1)

    model = engine.model
    results["prefill_ms"] = {
        "ours (vision and positions by the model, text layers here)": gpu_ms(lambda i: step.prefill(i, 0)),
        "the model's whole forward": gpu_ms(lambda i: model(**i, logits_to_keep=1)),
        "vision encoder alone": gpu_ms(
            lambda i: model.model.get_image_features(i["pixel_values"], i["image_grid_thw"])
        ),
    }

    def step_ms(need: int) -> dict:
        """Milliseconds per decoding step (a graph replay) for each batch size, `need` positions visible."""
        timings = {}
        for rows in step.slot_sizes:
            step.run(rows, need)
            torch.cuda.synchronize()
            began = time.perf_counter()
            for _ in range(50):
                step.run(rows, need)
            torch.cuda.synchronize()
            timings[str(rows)] = round(1000 * (time.perf_counter() - began) / 50, 2)
        return timings

    step.state.zero_()
    step.state[1:] = 200  # a prompt like the one above: 200 positions visible
    results["step_kernels"] = step.kernels
    results["step_ms_by_rows_context_1024"] = step_ms(201)
    step.state[1:] = 3000  # in the 4,096 bucket
    results["step_ms_by_rows_context_4096"] = step_ms(3001)
    step.state[1:] = 200
    if step.kernels != "eager":  # the same graphs with the eager operations
        fast = (step.triton, step.ops, step.graphs)
        step.triton, step.ops, step.graphs = None, step.eager_ops, {}
        results["step_ms_by_rows_context_1024_eager"] = step_ms(201)
        step.state[1:] = 3000
        results["step_ms_by_rows_context_4096_eager"] = step_ms(3001)
        step.state[1:] = 200
        step.triton, step.ops, step.graphs = fast
    throughput = {}
    for streams in sorted({1, 4, 8, args.slots}):
        began = time.perf_counter()
        sinks = [submit(128)[0] for _ in range(streams)]
        for sink in sinks:
            sink.finished.wait(600)
        wall = time.perf_counter() - began
        throughput[str(streams)] = round(sum(s.count for s in sinks) / wall, 1)
    results["tokens_per_second_by_streams"] = throughput
    sink, began = submit(129)
    sink.finished.wait(600)
    results["batch1_decode_tokens_per_second"] = round((sink.count - 1) / (time.perf_counter() - sink.first), 1)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
