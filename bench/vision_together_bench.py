"""The images of prompts admitted together, encoded one prompt a pass (as before) or in passes together
(VisionEncoder.inputs_many), each prompt's image a size of its own so that no grid has a graph.

    python bench/vision_together_bench.py [--model DIR] [--device cuda] [--prompts 16] [--repeat 10] [--out F]

Both ways in turn, `--repeat` times: the wall time until every prompt has its features (the device
synchronised), and on a GPU the host's time to queue the work; min / median / p90 / max, and how far
the features of the two ways differ at most. Then the same prompts as a burst of requests through
the scheduler (all waiting before it admits any, as clients arriving together), both ways in turn:
each burst's first and last first token after it was submitted. `--device cpu` runs the smoke model
(a trial of the bench, and the host's side of it).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.batching_bench import Sink, warm_engine  # noqa: E402
from bench.prefill_bench import spread  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/glm-4.6v-flash-random")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument(
        "--side", type=int, default=336, help="the first image's width and height; each next is 28 wider"
    )
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    import torch
    from PIL import Image

    engine = warm_engine(args.model, args.device, slots=args.prompts, context=4096)  # its warm-up checks vision
    vision = engine.decoding.runner.vision
    assert vision is not None and vision.checked, "the model's own encoder runs: nothing to compare"
    vision.capture = None  # nothing recorded meanwhile: every grid eager, both ways
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it"}]}]
    prompts = []
    pictures = [
        Image.new("RGB", (args.side + 28 * i, args.side), (20 * i % 256, 120, 200)) for i in range(args.prompts)
    ]
    for picture in pictures:
        inputs = engine.prepare(messages, [picture], 1 << 20).inputs
        prompts.append({k: v.to(engine.device) for k, v in inputs.items()})
    cuda = args.device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed(call) -> tuple[float, float, list]:
        sync()
        began = time.perf_counter()
        with torch.inference_mode():
            given = call()
        queued = time.perf_counter()
        sync()
        return 1000 * (time.perf_counter() - began), 1000 * (queued - began), given

    def features(given: list[dict]) -> list:
        return [each["mm_encoder_outputs"]["image"].pooler_output[0] for each in given]

    ways = {
        "alone": lambda: [vision.inputs(dict(p)) for p in prompts],
        "together": lambda: vision.inputs_many([dict(p) for p in prompts]),
    }
    for call in ways.values():  # each way's first run: the allocator's first blocks, kernels' first launches
        timed(call)
    wall = {name: [] for name in ways}
    host = {name: [] for name in ways}
    differs = 0.0
    for _ in range(args.repeat):
        outputs = {}
        for name, call in ways.items():
            ms, queued_ms, given = timed(call)
            wall[name].append(ms)
            host[name].append(queued_ms)
            outputs[name] = features(given)
        for one, other in zip(outputs["alone"], outputs["together"], strict=True):
            differs = max(differs, float((one.float() - other.float()).abs().max()))
    bursts = first_tokens(engine, vision, pictures, messages, args.repeat)
    patches = [int(p["image_grid_thw"].prod(-1).sum()) for p in prompts]
    results = {
        "device": torch.cuda.get_device_name(0) if cuda else args.device,
        "torch": torch.__version__,
        "vision_kernels": vision.runs,
        "prompts": args.prompts,
        "patches": {"each": [min(patches), max(patches)], "all": sum(patches)},
        "wall_ms": {name: spread(values) for name, values in wall.items()},
        "host_queueing_ms": {name: spread(values) for name, values in host.items()} if cuda else None,
        "median_ratio": round(statistics.median(wall["alone"]) / statistics.median(wall["together"]), 2),
        "features_differ_at_most": differs,
        "burst_first_token_ms": bursts,
    }
    print(json.dumps(results, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


def first_tokens(engine, vision, pictures: list, messages: list, repeat: int) -> dict:
    """Bursts of one request per picture through the scheduler, its images encoded one prompt a pass
    (`vision.joining` off) or together, in turn: the first and the last first token of each burst, in
    milliseconds after the burst was submitted."""
    scheduler = engine.decoding.scheduler

    def burst() -> tuple[float, float]:
        prepared = [engine.prepare(messages, [picture], 1 << 20) for picture in pictures]
        sinks = [Sink() for _ in prepared]
        with scheduler.wake:  # every request waiting before the scheduler admits any
            began = time.perf_counter()
            for each, sink in zip(prepared, sinks, strict=True):
                engine.generate(each, sink, max_new_tokens=1, temperature=0, top_p=1, should_stop=lambda: False)
        for sink in sinks:
            assert sink.finished.wait(120) and sink.error is None, sink.error
        firsts = sorted(1000 * (sink.first - began) for sink in sinks)
        return firsts[0], firsts[-1]

    ways = {"alone": False, "together": True}
    times: dict[str, dict[str, list]] = {name: {"first": [], "last": []} for name in ways}
    joined = vision.together
    for round_ in range(repeat + 1):  # the first round of each way warms it
        for name, joining in ways.items():
            vision.joining = joining
            first, last = burst()
            if round_:
                times[name]["first"].append(first)
                times[name]["last"].append(last)
    vision.joining = True
    return {
        "prompts_encoded_together": vision.together - joined,
        **{name: {key: spread(values) for key, values in each.items()} for name, each in times.items()},
    }


if __name__ == "__main__":
    main()
