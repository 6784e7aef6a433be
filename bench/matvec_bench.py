"""The decoding step's matrix products at one row: cuBLAS (as F.linear runs them) against
inference/ops/matvec.py's Triton kernel, and both against what a copy moves (on a GPU machine).

    python bench/matvec_bench.py [--search [SHAPE ...]] [--out matvec.json]

The weights are the real GLM-4.6V-Flash text model's shapes with random values, one copy per layer
as in the model, so that nothing is served from L2 across layers; each figure is a CUDA graph of
all 40 layers' products (and the LM head) replayed. `--search` times every kernel configuration of
the grid on each shape (or on the shapes named: qkv, out, gate_up, down, head) first and uses each
shape's fastest; without it, matvec.CONFIGS.
"""

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.smoke_model import FULL_TEXT  # noqa: E402  (the real-size checkpoint's text model)

HIDDEN, INTERMEDIATE = FULL_TEXT["hidden_size"], FULL_TEXT["intermediate_size"]
LAYERS, VOCAB = FULL_TEXT["num_hidden_layers"], FULL_TEXT["vocab_size"]
HEAD_DIM = HIDDEN // FULL_TEXT["num_attention_heads"]
QKV = HIDDEN + 2 * FULL_TEXT["num_key_value_heads"] * HEAD_DIM
SHAPES = {  # name: (outputs, inputs, bias)
    "qkv": (QKV, HIDDEN, True),
    "out": (HIDDEN, HIDDEN, False),
    "gate_up": (2 * INTERMEDIATE, HIDDEN, False),  # with the gated activation, as the step runs it
    "down": (HIDDEN, INTERMEDIATE, False),
}


def timed(fn, repeat: int = 20) -> float:
    """Seconds per call of `fn` captured as one CUDA graph."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(repeat):
        graph.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - began) / repeat


def copy_bandwidth() -> dict:
    """Bytes per second moved (read plus written) copying 4 GiB on the device: by the copy that
    `Tensor.copy_` makes and by an elementwise kernel (x * 1 into another tensor)."""
    import torch

    source = torch.ones(1 << 31, dtype=torch.bfloat16, device="cuda")
    target = torch.empty_like(source)
    moved = 2 * source.numel() * source.element_size()
    copies = {"copy_": lambda: target.copy_(source), "elementwise": lambda: torch.mul(source, 1, out=target)}
    return {name: moved / min(timed(copy, 10) for _ in range(3)) for name, copy in copies.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--search", nargs="*", metavar="SHAPE")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from inference.ops import kernels, matvec

    def cublas(x, weight, bias=None, gated=False):
        return kernels.gated_silu(F.linear(x, weight)) if gated else F.linear(x, weight, bias)

    torch.manual_seed(0)
    dtype = torch.bfloat16
    weights = {
        name: [torch.randn((n, k), dtype=dtype, device="cuda") * 0.02 for _ in range(LAYERS)]
        for name, (n, k, _) in SHAPES.items()
    }
    biases = {name: torch.randn(n, dtype=dtype, device="cuda") for name, (n, _, bias) in SHAPES.items() if bias}
    head = torch.randn((VOCAB, HIDDEN), dtype=dtype, device="cuda") * 0.02
    total_bytes = sum(w.numel() * 2 for copies in weights.values() for w in copies) + head.numel() * 2
    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "weights_gb": round(total_bytes / 1e9, 3),
    }
    copies = copy_bandwidth()
    result["copy_tb_s"] = {name: round(rate / 1e12, 3) for name, rate in copies.items()}
    result["bandwidth_tb_s"] = max(result["copy_tb_s"].values())
    result["floor_ms"] = round(total_bytes / (result["bandwidth_tb_s"] * 1e12) * 1e3, 3)
    print(json.dumps(result), flush=True)

    every = dict(SHAPES, head=(VOCAB, HIDDEN, False))

    def matrices(name):
        return [head] * LAYERS if name == "head" else weights[name]

    if args.search is not None:
        grid = list(itertools.product((2, 4, 8, 16), (256, 512, 1024), (4, 8), (3, 4)))
        found, searched = {}, {}
        for name, (n, k, _) in every.items():
            if args.search and name not in args.search:
                continue
            x = torch.randn((1, k), dtype=dtype, device="cuda")
            mats = matrices(name)[: 8 if name == "head" else LAYERS]
            b, g = biases.get(name), name == "gate_up"
            base = timed(lambda x=x, b=b, g=g, mats=mats: [cublas(x, w, b, g) for w in mats])
            rows = []
            for config in grid:
                try:
                    seconds = timed(
                        lambda x=x, b=b, g=g, mats=mats, c=config: [matvec.linear(x, w, b, g, c) for w in mats]
                    )
                except Exception as error:  # a configuration the compiler refuses
                    rows.append({"config": config, "error": str(error)[:120]})
                    continue
                rows.append({"config": config, "us": round(seconds / len(mats) * 1e6, 2)})
            rows.sort(key=lambda row: row.get("us", 1e9))
            found[n, k, g] = tuple(rows[0]["config"])
            nbytes = n * k * 2
            searched[name] = {
                "cublas_us": round(base / len(mats) * 1e6, 2),
                "cublas_tb_s": round(nbytes / (base / len(mats)) / 1e12, 3),
                "best_tb_s": round(nbytes / (rows[0]["us"] / 1e6) / 1e12, 3),
                "best": rows[:8],
            }
            print(name, json.dumps({k: v for k, v in searched[name].items() if k != "best"}), rows[:3], flush=True)
        matvec.CONFIGS.update(found)
        result["search"] = searched
        result["configs"] = {f"{n}x{k}{' gated' * g}": list(config) for (n, k, g), config in found.items()}

    xs = {name: torch.randn((1, k), dtype=dtype, device="cuda") for name, (_, k, _) in every.items()}

    def step(linear):
        """Every product of a decoding step at one row, the gated activation with gate/up's."""
        for layer in range(LAYERS):
            for name in SHAPES:
                linear(xs[name], weights[name][layer], biases.get(name), name == "gate_up")
        linear(xs["head"], head, None)

    point = {}
    for label, linear in (("cublas", cublas), ("triton", matvec.linear)):
        seconds = min(timed(lambda linear=linear: step(linear)) for _ in range(3))
        point[label] = {
            "ms": round(seconds * 1e3, 3),
            "tb_s": round(total_bytes / seconds / 1e12, 3),
            "of_floor": round(result["floor_ms"] / (seconds * 1e3), 3),
        }
    torch.backends.cuda.preferred_blas_library("cublaslt")
    seconds = min(timed(lambda: step(cublas)) for _ in range(3))
    torch.backends.cuda.preferred_blas_library("cublas")
    point["cublaslt"] = {"ms": round(seconds * 1e3, 3), "of_floor": round(result["floor_ms"] / (seconds * 1e3), 3)}
    # the Triton kernel's answers against cuBLAS's, on the first layer's shapes
    error = 0.0
    for name in SHAPES:
        want = cublas(xs[name], weights[name][0], biases.get(name), name == "gate_up").float()
        got = matvec.linear(xs[name], weights[name][0], biases.get(name), name == "gate_up").float()
        error = max(error, float((got - want).abs().max() / want.abs().max()))
    point["max_relative_difference"] = error
    result["products"] = point
    print(json.dumps(point), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
