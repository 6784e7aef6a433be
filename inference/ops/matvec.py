"""The decoding step's matrix products at one row, as a Triton kernel that reads the weights at
nearly the GPU's bandwidth.

At one row a decoding step is the weights read once: every matrix product is a long thin read of a
weight matrix. cuBLAS ran them at 2.4-4.3 TB/s on an H200, the narrow ones (q/k/v, the attention's
output) slowest and each split over the inputs with a second reduction kernel (docs/BENCHMARKS.md).
Here each block reads a band of whole output rows of the weight, contiguous along the input, in wide
loads marked to be evicted first (the weights are read once a step; the activations stay in L2),
and keeps a float32 partial product per element until the band's end, so that its loop does
nothing but load and multiply-add. The MLP's gated activation is the gate/up product's last step:
a block reads the same rows of the gate and the up half. At two and four rows cuBLAS's tensor cores
were faster than any form of this kernel tried, so the step runs it at one row only.

Written for the Triton interpreter too (TRITON_INTERPRET=1), which runs it on a CPU in the tests.
"""

import triton
import triton.language as tl


@triton.jit
def _matvec(
    x_ptr,
    weight_ptr,
    bias_ptr,
    out_ptr,
    N,
    K,
    UP_OFFSET,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GATED: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    # One block: BLOCK_N outputs. With GATED the weight has 2N rows, gate then up: the block reads
    # the same BLOCK_N rows of both halves and writes up * silu(gate), each product rounded to the
    # output dtype first, as F.linear then gated_silu round them.
    outputs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    inside = outputs < N
    columns = tl.arange(0, BLOCK_K)
    weight_rows = weight_ptr + outputs[:, None].to(tl.int64) * K
    up_rows = weight_rows + UP_OFFSET  # GATED: the up half's rows, N * K elements on
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        k = start + columns
        inputs = inside[:, None] if EVEN_K else inside[:, None] & (k[None, :] < K)
        w = tl.load(weight_rows + k[None, :], mask=inputs, other=0.0, eviction_policy="evict_first")
        x = tl.load(x_ptr + k, mask=k < K, other=0.0).to(tl.float32)[None, :]
        acc += w.to(tl.float32) * x
        if GATED:
            w = tl.load(up_rows + k[None, :], mask=inputs, other=0.0, eviction_policy="evict_first")
            acc_up += w.to(tl.float32) * x
    total = tl.sum(acc, axis=1)
    if GATED:
        gate = total.to(out_ptr.dtype.element_ty).to(tl.float32)
        up = tl.sum(acc_up, axis=1).to(out_ptr.dtype.element_ty).to(tl.float32)
        total = up * (gate / (1.0 + tl.exp(-gate))).to(out_ptr.dtype.element_ty).to(tl.float32)
    if HAS_BIAS:
        total += tl.load(bias_ptr + outputs, mask=inside, other=0.0).to(tl.float32)
    tl.store(out_ptr + outputs, total.to(out_ptr.dtype.element_ty), mask=inside)


# (block_n, block_k, warps, stages) by the weight's (outputs, inputs) and whether it is gated: the
# fastest of a grid on an H200 (bench/matvec_bench.py --search); other shapes take DEFAULT.
DEFAULT = (8, 512, 4, 3)
CONFIGS = {
    (4608, 4096, False): (8, 512, 8, 3),
    (4096, 4096, False): (16, 1024, 8, 3),
    (27392, 4096, True): (4, 512, 4, 3),
    (4096, 13696, False): (4, 512, 8, 3),
    (151552, 4096, False): (16, 1024, 8, 3),
}


def linear(x, weight, bias=None, gated: bool = False, config=None):
    """F.linear(x, weight, bias) for one row x [1, inputs] and a weight [outputs, inputs], both
    contiguous; with `gated`, gated_silu(F.linear(x, weight)) for a weight of 2 x outputs rows (gate,
    then up)."""
    import torch

    n, k = weight.shape
    if x.shape != (1, k):
        raise ValueError(f"x of shape {tuple(x.shape)} for a weight of {k} inputs: one row of {k} wanted")
    if gated and (n % 2 or bias is not None):
        raise ValueError("a gated product takes an even number of weight rows and no bias")
    block_n, block_k, warps, stages = config or CONFIGS.get((n, k, gated), DEFAULT)
    n = n // 2 if gated else n
    out = torch.empty((1, n), dtype=x.dtype, device=x.device)
    _matvec[(triton.cdiv(n, block_n),)](
        x,
        weight,
        weight if bias is None else bias,
        out,
        n,
        k,
        n * k if gated else 0,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        HAS_BIAS=bias is not None,
        GATED=gated,
        EVEN_K=k % block_k == 0,
        num_warps=warps,
        num_stages=stages,
    )
    return out
