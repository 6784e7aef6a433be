"""The first token of prompts of a length, and images of a size, the process has not seen before:
with PyTorch's attention free to pick cuDNN (which builds a plan for every new shape) and without it.

    python bench/fresh_shapes_bench.py [--model DIR] [--rounds 6] [--long 4096] [--out fresh.json]

Through the scheduler, one request at a time, both ways in turn each round, every request new in
shape: a text prompt of more than 512 tokens (no prompt graph takes it) and an image prompt whose image
is 28 pixels wider than any before (no vision graph; nothing is recorded meanwhile). Then the same
`--long`-word prompt again and again, each way: what a shape seen before costs. Min / median / p90 / max.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.batching_bench import Sink, warm_engine  # noqa: E402
from bench.prefill_bench import spread  # noqa: E402

WORDS = "the quick brown fox jumps over a lazy dog while seven wise owls watch from the old oak".split()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/glm-4.6v-flash-random")
    parser.add_argument("--device", default="cuda", help="cpu: a trial of the bench itself (smoke model)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--long", type=int, default=4096, help="words of the prompt repeated at the end")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    import torch
    from PIL import Image

    engine = warm_engine(args.model, args.device, slots=2, context=4 * args.long + 1024)
    engine.decoding.scheduler.record_graphs = False  # nothing recorded between the requests timed
    vision = engine.decoding.runner.vision
    if vision is not None:
        vision.capture = None
    seen: set[int] = set()

    def prepare(content: list, images: list):
        return engine.prepare([{"role": "user", "content": content}], images, 1 << 20)

    def first_token(prepared) -> tuple[float, int]:
        sink = Sink()
        ask = dataclasses.replace(prepared, inputs=dict(prepared.inputs))  # the scheduler clears what it took
        began = time.perf_counter()
        engine.generate(ask, sink, max_new_tokens=1, temperature=0, top_p=1, should_stop=lambda: False)
        assert sink.finished.wait(120) and sink.error is None, sink.error
        return 1000 * (sink.first - began), prepared.prompt_tokens

    def text(words: int) -> list:
        return [{"type": "text", "text": " ".join(WORDS[i % len(WORDS)] for i in range(words))}]

    def fresh_text(words: int) -> tuple[float, int]:
        while True:  # a length of its own
            prepared = prepare(text(words), [])
            if prepared.prompt_tokens not in seen:
                seen.add(prepared.prompt_tokens)
                return first_token(prepared)
            words += 1

    ways = {"cudnn allowed": True, "without cudnn": False}
    fresh: dict[str, dict[str, list]] = {name: {"text": [], "image": []} for name in ways}
    width = 336
    for round_ in range(args.rounds):
        for name, allowed in ways.items():
            torch.backends.cuda.enable_cudnn_sdp(allowed)
            fresh[name]["text"].append(fresh_text(600 + 37 * round_ + (0 if allowed else 17))[0])
            width += 28
            picture = Image.new("RGB", (width, 336), (round_ * 20 % 256, 90, 160))
            fresh[name]["image"].append(first_token(prepare([{"type": "image"}, *text(8)], [picture]))[0])
    repeated: dict[str, list] = {}
    long_prompt = prepare(text(args.long), [])
    for name, allowed in ways.items():
        torch.backends.cuda.enable_cudnn_sdp(allowed)
        first_token(long_prompt)  # its shape seen once, each way
        repeated[name] = [first_token(long_prompt)[0] for _ in range(5)]

    results = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else args.device,
        "torch": torch.__version__,
        "rounds": args.rounds,
        "fresh_first_token_ms": {name: {k: spread(v) for k, v in each.items()} for name, each in fresh.items()},
        "long_prompt_tokens": long_prompt.prompt_tokens,
        "long_prompt_again_first_token_ms": {name: spread(values) for name, values in repeated.items()},
    }
    print(json.dumps(results, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
