"""The decoding step's matrix products at one row, as a Triton kernel that reads the weights at
nearly the GPU's bandwidth, with the small work around them folded in.

At one row a decoding step is the weights read once: every matrix product is a long thin read of a
weight matrix. cuBLAS ran them at 2.4-4.3 TB/s on an H200, the narrow ones (q/k/v, the attention's
output) slowest and each split over the inputs with a second reduction kernel (docs/BENCHMARKS.md).
Here each block reads a band of whole output rows of the weight, contiguous along the input, in wide
loads marked to be evicted first (the weights are read once a step; the activations stay in L2),
and keeps a float32 partial product per element until the band's end, so that its loop does
nothing but load and multiply-add. At two and four rows cuBLAS's tensor cores were faster than any
form of this kernel tried, so the step runs it at one row only.

Between the products a step has short kernels that read little and cost about 2 us apiece on an
H200, mostly waiting on memory. Two are folded into the products, computing what the separate
kernels computed with the same roundings (tests/inference/test_kernels.py):
- the MLP's gated activation is gate/up's last step: a block reads the same rows of both halves;
- q/k/v's rotation and KV store (`qkv_rotate_store`): a block's outputs are whole (x0, x1) pairs
  of one head, rotated and written to q or into the slot where kernels.rotate_store puts them.
The residual add with its norms needs every output of a product: done by the block that finished
last (counting blocks on an atomic counter) it cost as much as its own kernel, so it stays one.

On Hopper and later the products are launched dependent (ops/dependent.py): a block loads its first
tile of weights while the kernel before it ends, and waits for it only to read x.

Written for the Triton interpreter too (TRITON_INTERPRET=1), which runs it on a CPU in the tests.
"""

import triton
import triton.language as tl

from inference.ops import dependent


@triton.jit
def _matvec(
    x_ptr,
    weight_ptr,
    bias_ptr,
    out_ptr,
    N,
    K,
    UP_OFFSET,
    row_ptr,  # PICK_ROW: x's row to read, from the device (a prompt's last token)
    # ROTATE: q's output, the layer's cache, the row's write index and position, the rotary's
    # inverse frequencies and scale, the cache's strides
    cache_ptr,
    index_ptr,
    position_ptr,
    inv_freq_ptr,
    scale,
    kv_stride,
    head_stride,
    position_stride,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GATED: tl.constexpr,
    ROTATE: tl.constexpr,
    EVEN_K: tl.constexpr,
    HEADS: tl.constexpr,
    KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    ROTATED_PAIRS: tl.constexpr,
    PICK_ROW: tl.constexpr,
    PDL: tl.constexpr,
):
    # One block: BLOCK_N outputs. GATED: the weight has 2N rows, gate then up: the block reads the
    # same BLOCK_N rows of both halves and writes up * silu(gate), each product rounded to the
    # output dtype first, as F.linear then gated_silu round them.
    outputs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    inside = outputs < N
    columns = tl.arange(0, BLOCK_K)
    weight_rows = weight_ptr + outputs[:, None].to(tl.int64) * K
    up_rows = weight_rows + UP_OFFSET  # GATED: the up half's rows, N * K elements on
    # The first tile of weights (which no kernel writes) before the wait, its own names: a loop's
    # values keep one shape in Triton's compiler (tests/inference/test_kernels_compile.py).
    first_inputs = inside[:, None] if EVEN_K else inside[:, None] & (columns[None, :] < K)
    w_first = tl.load(weight_rows + columns[None, :], mask=first_inputs, other=0.0, eviction_policy="evict_first")
    if GATED:
        up_first = tl.load(up_rows + columns[None, :], mask=first_inputs, other=0.0, eviction_policy="evict_first")
    dependent.wait(PDL)
    if PICK_ROW:
        x_ptr += tl.load(row_ptr).to(tl.int64) * K
    x_first = tl.load(x_ptr + columns, mask=columns < K, other=0.0).to(tl.float32)[None, :]
    acc = w_first.to(tl.float32) * x_first
    if GATED:
        acc_up = up_first.to(tl.float32) * x_first
    for start in range(BLOCK_K, K, BLOCK_K):
        k = start + columns
        inputs = inside[:, None] if EVEN_K else inside[:, None] & (k[None, :] < K)
        w = tl.load(weight_rows + k[None, :], mask=inputs, other=0.0, eviction_policy="evict_first")
        x = tl.load(x_ptr + k, mask=k < K, other=0.0).to(tl.float32)[None, :]
        acc += w.to(tl.float32) * x
        if GATED:
            w = tl.load(up_rows + k[None, :], mask=inputs, other=0.0, eviction_policy="evict_first")
            acc_up += w.to(tl.float32) * x
    dependent.release(PDL)
    total = tl.sum(acc, axis=1)
    if GATED:
        gate = total.to(out_ptr.dtype.element_ty).to(tl.float32)
        up = tl.sum(acc_up, axis=1).to(out_ptr.dtype.element_ty).to(tl.float32)
        total = up * (gate / (1.0 + tl.exp(-gate))).to(out_ptr.dtype.element_ty).to(tl.float32)
    if HAS_BIAS:
        total += tl.load(bias_ptr + outputs, mask=inside, other=0.0).to(tl.float32)
    if ROTATE:
        # The block's q/k/v outputs as kernels._rotate_store treats them: rounded to the cache's dtype,
        # pairs (x0, x1) -> (x0 c - x1 s, x1 c + x0 s) on the first ROTATED_PAIRS pairs of q and k
        # heads, q to out_ptr, k and v into the slot (the row's, 0) at the row's write index.
        value = total.to(cache_ptr.dtype.element_ty).to(tl.float32)
        even, odd = tl.split(tl.reshape(value, (BLOCK_N // 2, 2)))
        first = tl.program_id(0) * BLOCK_N + 2 * tl.arange(0, BLOCK_N // 2)  # each pair's first output
        pairs_inside = first < N
        head = first // HEAD_DIM
        channel = first % HEAD_DIM
        rotated = (channel // 2 < ROTATED_PAIRS) & (head < HEADS + KV_HEADS)
        angle = tl.load(position_ptr).to(tl.float32) * tl.load(inv_freq_ptr + channel // 2, mask=rotated, other=0.0)
        cos = tl.where(rotated, tl.cos(angle) * scale, 1.0)
        sin = tl.where(rotated, tl.sin(angle) * scale, 0.0)
        x0 = (even * cos - odd * sin).to(cache_ptr.dtype.element_ty)
        x1 = (odd * cos + even * sin).to(cache_ptr.dtype.element_ty)
        is_q = head < HEADS
        tl.store(out_ptr + first, x0, mask=pairs_inside & is_q)
        tl.store(out_ptr + first + 1, x1, mask=pairs_inside & is_q)
        is_v = head >= HEADS + KV_HEADS
        kv_head = tl.where(is_v, head - HEADS - KV_HEADS, head - HEADS)
        slot = cache_ptr + is_v.to(tl.int32) * kv_stride + kv_head * head_stride + channel
        slot += tl.load(index_ptr) * position_stride
        tl.store(slot, x0, mask=pairs_inside & ~is_q)
        tl.store(slot + 1, x1, mask=pairs_inside & ~is_q)
    else:  # rounded to the weights' dtype first, as F.linear's output then .float() (logits)
        total = total.to(weight_ptr.dtype.element_ty).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + outputs, total, mask=inside)


# (block_n, block_k, warps, stages) by the weight's (outputs, inputs) and whether it is gated: the
# fastest of a grid on an H200 (bench/matvec_bench.py --search); other shapes take DEFAULT.
DEFAULT = (8, 512, 4, 3)
CONFIGS = {
    (4608, 4096, False): (8, 512, 8, 3),
    (4096, 4096, False): (16, 1024, 8, 3),
    (27392, 4096, True): (4, 256, 4, 3),
    (4096, 13696, False): (16, 1024, 8, 3),
    (151552, 4096, False): (16, 1024, 8, 3),
}


def linear(x, weight, bias=None, gated: bool = False, config=None, dtype=None, row=None):
    """F.linear(x, weight, bias) for one row x [1, inputs] and a weight [outputs, inputs], both
    contiguous; with `gated`, gated_silu(F.linear(x, weight)) for a weight of 2 x outputs rows (gate,
    then up). With `dtype`, F.linear(...).to(dtype) in the same kernel (the step's float32 logits).
    With `row` (a one-element integer tensor on x's device), x may have many rows and the product is
    of x[row]: picked by the kernel, where index_select would be one more kernel (a prompt's last
    token's logits, whose row a recorded graph reads from the device)."""
    import torch

    n, k = _check(x if row is None else x[:1], weight)
    if row is not None and (not x.is_contiguous() or row.numel() != 1 or row.device != x.device):
        raise ValueError("a picked row needs x contiguous and one row index on its device")
    if gated and (n % 2 or bias is not None):
        raise ValueError("a gated product takes an even number of weight rows and no bias")
    n = n // 2 if gated else n
    out = torch.empty((1, n), dtype=dtype or x.dtype, device=x.device)
    picked = {} if row is None else {"row_ptr": row, "PICK_ROW": True}
    _launch(x, weight, bias, out, config, gated=gated, UP_OFFSET=n * k if gated else 0, **picked)
    return out


def qkv_rotate_store(x, weight, bias, cache, index, position, inv_freq, scale: float, heads: int, kv_heads: int):
    """kernels.rotate_store of F.linear(x, weight, bias) at one row: returns the rotated q
    [1, heads, head dim] and writes k and v into slot 0 of `cache` at index[0]."""
    import torch

    n, _ = _check(x, weight)
    head_dim = cache.shape[-1]
    if n != (heads + 2 * kv_heads) * head_dim or head_dim % 2:
        raise ValueError(f"{n} outputs are not q, k and v of {heads} and {kv_heads} heads of {head_dim}")
    if not rotates_in_product(weight):
        raise ValueError("rotating in the product needs an even number of outputs per block")
    q = torch.empty((1, heads, head_dim), dtype=x.dtype, device=x.device)
    _launch(
        x,
        weight,
        bias,
        q,
        None,
        ROTATE=True,
        cache_ptr=cache,
        index_ptr=index,
        position_ptr=position,
        inv_freq_ptr=inv_freq,
        scale=float(scale),
        kv_stride=cache.stride(1),
        head_stride=cache.stride(2),
        position_stride=cache.stride(3),
        HEADS=heads,
        KV_HEADS=kv_heads,
        HEAD_DIM=head_dim,
        ROTATED_PAIRS=inv_freq.numel(),
    )
    return q


def rotates_in_product(weight) -> bool:
    """Whether qkv_rotate_store takes this weight: its blocks hold whole (x0, x1) pairs."""
    return CONFIGS.get((*weight.shape, False), DEFAULT)[0] % 2 == 0


def _check(x, weight) -> tuple[int, int]:
    n, k = weight.shape
    if x.shape != (1, k):
        raise ValueError(f"x of shape {tuple(x.shape)} for a weight of {k} inputs: one row of {k} wanted")
    return n, k


# What a launch passes for the arguments its epilogue does not use (pointers: x).
_OPTIONAL_POINTERS = ("cache_ptr", "index_ptr", "position_ptr", "inv_freq_ptr", "row_ptr")
_UNUSED = dict(
    scale=0.0,
    kv_stride=0,
    head_stride=0,
    position_stride=0,
    UP_OFFSET=0,
    PICK_ROW=False,
    ROTATE=False,
    HEADS=1,
    KV_HEADS=1,
    HEAD_DIM=2,
    ROTATED_PAIRS=1,
)


def _launch(x, weight, bias, out, config, gated: bool = False, **epilogue):
    """The kernel over `weight`'s outputs (half its rows when gated) with the shape's configuration;
    the arguments of epilogues not asked for are _UNUSED's."""
    rows, k = weight.shape
    block_n, block_k, warps, stages = config or CONFIGS.get((rows, k, gated), DEFAULT)
    n = rows // 2 if gated else rows
    unused = {**dict.fromkeys(_OPTIONAL_POINTERS, x), **_UNUSED}
    _matvec[(triton.cdiv(n, block_n),)](
        x,
        weight,
        weight if bias is None else bias,
        out,
        n,
        k,
        **{**unused, **epilogue},
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        HAS_BIAS=bias is not None,
        GATED=gated,
        EVEN_K=k % block_k == 0,
        num_warps=warps,
        num_stages=stages,
        **dependent.options(x),
    )
