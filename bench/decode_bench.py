"""Decode speed of plain `generate` on the real-size model: dynamic KV cache (today's server path)
vs a static KV cache, which lets transformers compile the decoding step. Tells which path the
server should take; run on a GPU machine.

    python bench/decode_bench.py [--model DIR] [--tokens 128]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "Describe the picture in detail, then list three objects you can see."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/glm-4.6v-flash-random")
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    if not Path(args.model, "config.json").exists():
        subprocess.run([sys.executable, "-m", "inference.smoke_model", args.model, "--full"], cwd=ROOT, check=True)
    import torch

    from bench.inference_bench import image_url
    from inference.engine import Engine
    from inference.limits import load_image
    from inference.settings import Settings

    engine = Engine(args.model, "cuda", "bfloat16", decoder="generate")
    engine.load()
    image = load_image(image_url(), Settings())
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]

    def run(new_tokens: int, **extra) -> float:
        inputs = {k: v.to("cuda") for k, v in engine.prepare(messages, [image], 1 << 20).inputs.items()}
        torch.cuda.synchronize()
        began = time.perf_counter()
        with torch.inference_mode():
            engine.model.generate(
                **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, **extra
            )
        torch.cuda.synchronize()
        return time.perf_counter() - began

    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    import transformers

    results["transformers"] = transformers.__version__
    for name, extra in (("dynamic", {}), ("static", {"cache_implementation": "static"})):
        try:
            began = time.perf_counter()
            run(args.tokens, **extra)  # warm-up: compiles where it compiles
            warm = time.perf_counter() - began
            first = statistics.median(run(1, **extra) for _ in range(3))
            total = statistics.median(run(args.tokens + 1, **extra) for _ in range(3))
            results[name] = {
                "warm_up_s": round(warm, 2),
                "ttft_ms": round(first * 1000, 1),
                "decode_tokens_per_second": round(args.tokens / (total - first), 1),
                "ms_per_token": round(1000 * (total - first) / args.tokens, 2),
            }
        except Exception as exc:  # an unsupported path is a result too
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        print(json.dumps({name: results[name]}), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
