"""Why the first token of the same prompt comes sooner or later: the batched decoder without HTTP,
the same prompt's first token again and again, each split into where its time went.

    python bench/prefill_bench.py [--model DIR] [--repeat 40] [--image] [--together 16] [--out prefill.json]

Per request: the wall time to the first token (as the scheduler hands it over), the scheduler's
split (inputs to the device, the prefill with its sampling), the host CPU time of the decoding thread
meanwhile, the garbage collector's pauses in that span, and the prefill alone timed on the device
(CUDA events around the same call) and on the host; with `--together N`, N copies of the prompt
admitted together timed the same way; each as min / median / p90 / max.
"""

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.batching_bench import PROMPT, Sink  # noqa: E402


class Pauses:
    """The garbage collector's pauses (gc.callbacks), in seconds, by generation."""

    def __init__(self):
        self.spans: list[tuple[int, float]] = []
        self._began = 0.0
        gc.callbacks.append(self._seen)

    def _seen(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.spans.append((info["generation"], time.perf_counter() - self._began))

    def take(self) -> list[tuple[int, float]]:
        spans, self.spans = self.spans, []
        return spans


def spread(values: list[float]) -> dict:
    from inference.stats import percentile

    return {
        "min": round(min(values), 2),
        "median": round(statistics.median(values), 2),
        "p90": round(percentile(values, 90), 2),
        "max": round(max(values), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/glm-4.6v-flash-random")
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--image", action="store_true", help="a 336x336 image before the text")
    parser.add_argument("--device", default="cuda", help="cpu: a trial of this bench itself, on a small model")
    parser.add_argument(
        "--together", type=int, default=0, help="also time this many copies of the prompt admitted together (<= 16)"
    )
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if not Path(args.model, "config.json").exists():
        subprocess.run([sys.executable, "-m", "inference.smoke_model", args.model, "--full"], cwd=ROOT, check=True)
    import torch

    from bench.inference_bench import image_url
    from inference.engine import Engine
    from inference.limits import load_image
    from inference.settings import Settings

    dtype = "bfloat16" if args.device == "cuda" else "float32"
    engine = Engine(args.model, args.device, dtype, decoder="batched", slots=16, context=10240)
    engine.load()
    engine.warmup()
    scheduler = engine.decoding.scheduler
    images = [load_image(image_url(), Settings())] if args.image else []
    content = [{"type": "image"}] if args.image else []
    messages = [{"role": "user", "content": [*content, {"type": "text", "text": PROMPT}]}]
    pauses = Pauses()
    thread_cpu: dict[str, float] = {}
    original = scheduler._prefill

    def timed_prefill(jobs):  # the decoding thread's CPU time for this prefill
        began = time.thread_time()
        original(jobs)
        thread_cpu["ms"] = 1000 * (time.thread_time() - began)

    scheduler._prefill = timed_prefill

    def requests(count: int) -> dict:
        rows = []
        for _ in range(count):
            prepared = engine.prepare(messages, images, 1 << 20)
            sink = Sink()
            pauses.take()
            began = time.perf_counter()
            engine.generate(prepared, sink, max_new_tokens=1, temperature=0, top_p=1, should_stop=lambda: False)
            sink.finished.wait(60)
            spans = pauses.take()
            rows.append(
                {
                    "first_token_ms": 1000 * (sink.first - began),
                    **scheduler.last_prefill,
                    "thread_cpu_ms": thread_cpu.get("ms", 0.0),
                    "gc_pauses": len(spans),
                    "gc_ms": 1000 * sum(s for _, s in spans),
                    "gc_oldest": max((g for g, _ in spans), default=-1),
                }
            )
            time.sleep(0.05)  # apart, as one client's requests are
        keys = ("first_token_ms", "to_device_ms", "prefill_ms", "thread_cpu_ms", "gc_ms")
        return {
            **{key: spread([row[key] for row in rows]) for key in keys},
            "requests_with_gc": sum(row["gc_pauses"] > 0 for row in rows),
            "requests_with_full_gc": sum(row["gc_oldest"] == 2 for row in rows),
            "slowest": sorted(rows, key=lambda row: row["first_token_ms"])[-3:],
        }

    def timed(call, count: int) -> tuple[list[float], list[float]]:
        """`call()` `count` times, each alone on the device: (its CUDA-event milliseconds, the host's
        milliseconds to queue it)."""
        device_ms, host_ms = [], []
        for _ in range(count):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            began = time.perf_counter()
            start.record()
            with torch.inference_mode():
                call()
            end.record()
            queued = time.perf_counter()
            torch.cuda.synchronize()
            device_ms.append(start.elapsed_time(end))
            host_ms.append(1000 * (queued - began))
        return device_ms, host_ms

    def on_device(count: int) -> dict:
        """The prefill alone, as the scheduler calls it, timed by CUDA events and by the host; with an
        image, the vision encoder's pass alone too (its graph once recorded)."""
        runner = engine.decoding.runner
        inputs = {k: v.to("cuda") for k, v in engine.prepare(messages, images, 1 << 20).inputs.items()}
        device_ms, host_ms = timed(lambda: runner.prefill_many([(inputs, 0)]), count)
        result = {"device_ms": spread(device_ms), "host_queueing_ms": spread(host_ms)}
        if args.together:
            # Prompts admitted together, as a burst of clients can be: one pass of the text layers,
            # each prompt's images encoded before it.
            many = [(inputs, slot) for slot in range(args.together)]
            together_ms, together_host_ms = timed(lambda: runner.prefill_many(many), count)
            result["together"] = {
                "prompts": args.together,
                "device_ms": spread(together_ms),
                "host_queueing_ms": spread(together_host_ms),
            }
        vision = getattr(runner, "vision", None)
        if "pixel_values" in inputs and vision is not None and vision.visual is not None:
            vision_ms, _ = timed(lambda: vision.features(inputs["pixel_values"], inputs["image_grid_thw"]), count)
            result["vision_device_ms"] = spread(vision_ms)
        return result

    results = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else args.device,
        "torch": torch.__version__,
        "image": args.image,
        "gc_objects": len(gc.get_objects()),
    }
    requests(3)  # warm
    results["requests"] = requests(args.repeat)
    if args.device == "cuda":
        results["prefill_alone"] = on_device(args.repeat)
    results["load_phases"] = engine.load_phases
    results["prompt_graphs"] = sorted(getattr(engine.decoding.runner, "prompt_graphs", {}))
    stats = engine.decoder_stats()
    results["vision"] = {key: stats.get(key) for key in ("vision_graphs", "vision_graph_replays")}
    print(json.dumps(results, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
