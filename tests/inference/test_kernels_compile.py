"""The decoding step's Triton kernels compile for the GPUs it is served on (sm_90: H100, H200) on a
machine without one. Triton's interpreter, which runs them in the CPU tests, does not type them as its
compiler does: a loop-carried value that changes shape runs there and fails at the first launch on
the GPU, where the step then falls back to the eager operations."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from inference.ops import kernels, matvec


def compile(fn, types, constexprs, warps, what):
    # each kernel as launched plainly and as launched dependent (ops/dependent.py)
    for pdl in (False, True):
        compile_form(fn, types, {**constexprs, "PDL": pdl}, warps, what + (" dependent" if pdl else ""))


def compile_form(fn, types, constexprs, warps, what):
    names = list(fn.arg_names)
    signature = {name: "constexpr" if name in constexprs else types[name] for name in names}
    fixed = {(names.index(k),): v for k, v in constexprs.items()}
    try:
        triton.compile(ASTSource(fn, signature, fixed), target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    except Exception as error:
        sys.exit(f"{what}: {error}")
    print("compiled", what)


def pointers(fn, dtype="*bf16", **others):
    return {**{n: dtype for n in fn.arg_names if n.endswith("_ptr")}, **others}


# the products as the step launches them: each shape's configuration, q/k/v with its rotation and KV
# store, the LM head's float32 logits of a picked row
types = pointers(matvec._matvec, row_ptr="*i64", index_ptr="*i64", position_ptr="*i64", inv_freq_ptr="*fp32")
types.update(N="i32", K="i32", UP_OFFSET="i32", scale="fp32", kv_stride="i32", head_stride="i32")
types.update(position_stride="i32")
unused = {k: v for k, v in matvec._UNUSED.items() if k.isupper()}
rotation = {"ROTATE": True, "HAS_BIAS": True, "HEADS": 32, "KV_HEADS": 2, "HEAD_DIM": 128, "ROTATED_PAIRS": 32}
for (rows, inputs, gated), (block_n, block_k, warps, _stages) in matvec.CONFIGS.items():
    shape = {"BLOCK_N": block_n, "BLOCK_K": block_k, "GATED": gated, "EVEN_K": inputs % block_k == 0}
    forms = [("plain", {"HAS_BIAS": False}, {})]
    if rows == 4608:
        forms.append(("rotated", rotation, {}))
    if rows == 151552:
        forms.append(("logits of a row", {"HAS_BIAS": False, "PICK_ROW": True}, {"out_ptr": "*fp32"}))
    for form, constexprs, out in forms:
        what = f"matvec {rows}x{inputs}{' gated' if gated else ''} {form}"
        compile(matvec._matvec, {**types, **out}, {**unused, **shape, **constexprs}, warps, what)

norm = pointers(kernels._add_norm, delta_eps="fp32", next_eps="fp32")
compile(kernels._add_norm, norm, {"WIDTH": 4096, "BLOCK": 4096}, 16, "add_norm")
embed = pointers(kernels._embed_norm, ids_ptr="*i64", eps="fp32", vocab="i32")
compile(kernels._embed_norm, embed, {"WIDTH": 4096, "BLOCK": 4096}, 16, "embed_norm")
attend = pointers(kernels._attend_slice, "*fp32", q_ptr="*bf16", cache_ptr="*bf16", index_ptr="*i64", scale="fp32")
attend.update({n: "i32" for n in ("slot_stride", "kv_stride", "head_stride", "position_stride")})
attend.update(slice_length="i32", splits="i32")
slices = {"HEADS": 32, "GROUP": 16, "GROUP_BLOCK": 16, "HEAD_DIM": 128, "BLOCK_N": kernels.BLOCK_KEYS}
compile(kernels._attend_slice, attend, {**slices, "PRECISION": None}, 4, "attend_slice")
merge = pointers(kernels._attend_merge, "*fp32", out_ptr="*bf16", splits="i32")
compile(kernels._attend_merge, merge, {"SPLIT_BLOCK": 32, "HEAD_DIM": 128}, 1, "attend_merge")
"""


def test_the_step_kernels_compile_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compiled here, not taken from an earlier run's cache
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("compiled") == 22, done.stdout
