"""The decoding step's non-matrix work as Triton kernels, for a GPU.

Profiled (bench/step_profile.py; the figures are in docs/BENCHMARKS.md), a step of the eager
operations spends about a third of its time outside the weight-reading matrix products: RMSNorm is
latency-bound however small the batch (four per layer), attention over a slot's keys runs as one
flash kernel with one block per KV head, and rotary, the KV store and the gated activation are a
dozen small kernels. Here each residual add with its two norms is one kernel (the first norm one
with the token's embedding), rotating q and k and writing k and v into the slot is one, and
attention is split over the keys
(flash-decoding: every block takes a slice of the positions, a second kernel merges the slices), so
a short prompt in a long slot reads only its own positions. A prompt's graph (ModelRunner.prompt_pass)
rotates its q and k at each row's own angles and stores its keys and values with one kernel too.

On Hopper and later the step's kernels are launched dependent (ops/dependent.py): each starts while
the one before it ends, and waits for it before reading what it wrote.

The eager forms (ops/reference.py, model_runner.ModelRunner) are the reference and the fallback: the step runs
one step both ways at start and uses these kernels only if they run and agree. Written for the
Triton interpreter too (TRITON_INTERPRET=1), which runs them on a CPU in the tests.
"""

import torch.nn.functional as F
import triton
import triton.language as tl

from inference.ops import dependent, matvec

BLOCK_KEYS = 64  # positions per inner block of attention
MAX_SPLITS = 32  # slices of the positions per (row, KV head); also bounds the merge kernel's tile


@triton.jit
def _rms_norm(x, weight, eps, WIDTH: tl.constexpr):
    # F.rms_norm over one row in float32 (entries past WIDTH are zeros)
    return x * tl.rsqrt(tl.sum(x * x, axis=0) / WIDTH + eps) * weight


@triton.jit
def _add_norm(
    hidden_ptr,
    delta_ptr,
    delta_weight_ptr,
    next_weight_ptr,
    hidden_out_ptr,
    normed_out_ptr,
    delta_eps,
    next_eps,
    WIDTH: tl.constexpr,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
):
    # hidden + rms_norm(delta), and rms_norm of that sum with the next weight; as F.rms_norm does,
    # in float32, each result rounded once to the storage dtype. Every load first: at one row the
    # time goes to waiting on memory, once if the loads go out together.
    row = tl.program_id(0)
    offsets = tl.arange(0, BLOCK)
    inside = offsets < WIDTH
    delta_weight = tl.load(delta_weight_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    next_weight = tl.load(next_weight_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    dependent.wait(PDL)
    delta = tl.load(delta_ptr + row * WIDTH + offsets, mask=inside, other=0.0).to(tl.float32)
    hidden = tl.load(hidden_ptr + row * WIDTH + offsets, mask=inside, other=0.0).to(tl.float32)
    dependent.release(PDL)
    normed = _rms_norm(delta, delta_weight, delta_eps, WIDTH)
    normed = normed.to(hidden_out_ptr.dtype.element_ty).to(tl.float32)
    hidden = (hidden + normed).to(hidden_out_ptr.dtype.element_ty)
    tl.store(hidden_out_ptr + row * WIDTH + offsets, hidden, mask=inside)
    hidden = hidden.to(tl.float32)
    normed = _rms_norm(hidden, next_weight, next_eps, WIDTH)
    tl.store(normed_out_ptr + row * WIDTH + offsets, normed.to(normed_out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _embed_norm(
    ids_ptr,
    table_ptr,
    weight_ptr,
    hidden_out_ptr,
    normed_out_ptr,
    eps,
    vocab,
    WIDTH: tl.constexpr,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
):
    # The token's row of the embeddings and its rms_norm, as F.embedding then F.rms_norm (in float32,
    # rounded once). An id outside the vocabulary reads nothing (zeros), never another row of memory.
    row = tl.program_id(0)
    offsets = tl.arange(0, BLOCK)
    inside = offsets < WIDTH
    weight = tl.load(weight_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    dependent.wait(PDL)
    token = tl.load(ids_ptr + row).to(tl.int64)
    known = offsets < tl.where((token >= 0) & (token < vocab), WIDTH, 0)
    hidden = tl.load(table_ptr + token * WIDTH + offsets, mask=known, other=0.0)
    dependent.release(PDL)
    tl.store(hidden_out_ptr + row * WIDTH + offsets, hidden, mask=inside)
    hidden = hidden.to(tl.float32)
    normed = _rms_norm(hidden, weight, eps, WIDTH)
    tl.store(normed_out_ptr + row * WIDTH + offsets, normed.to(normed_out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _gated_silu(gate_up_ptr, out_ptr, WIDTH: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offsets = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < WIDTH
    gate = tl.load(gate_up_ptr + row * 2 * WIDTH + offsets, mask=inside, other=0.0).to(tl.float32)
    up = tl.load(gate_up_ptr + row * 2 * WIDTH + WIDTH + offsets, mask=inside, other=0.0).to(tl.float32)
    silu = (gate / (1.0 + tl.exp(-gate))).to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * WIDTH + offsets, (up * silu).to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _rotated_pairs(qkv_ptr, row, head, cos, sin, HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr):
    # The row's q or k head of q/k/v [rows, heads + 2 kv heads, head dim], its interleaved pairs
    # (x0, x1) -> (x0 c - x1 s, x1 c + x0 s) in float32: (first, second) of each pair.
    pairs = tl.arange(0, HEAD_DIM // 2)
    source = qkv_ptr + (row * (HEADS + 2 * KV_HEADS) + head) * HEAD_DIM
    even = tl.load(source + 2 * pairs).to(tl.float32)
    odd = tl.load(source + 2 * pairs + 1).to(tl.float32)
    return even * cos - odd * sin, odd * cos + even * sin


@triton.jit
def _store_pairs(target, first, second, HEAD_DIM: tl.constexpr):
    pairs = tl.arange(0, HEAD_DIM // 2)
    tl.store(target + 2 * pairs, first.to(target.dtype.element_ty))
    tl.store(target + 2 * pairs + 1, second.to(target.dtype.element_ty))


@triton.jit
def _value(qkv_ptr, row, kv_head, HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr):
    # The row's v head `kv_head` of q/k/v.
    channels = tl.arange(0, HEAD_DIM)
    return tl.load(qkv_ptr + (row * (HEADS + 2 * KV_HEADS) + HEADS + KV_HEADS + kv_head) * HEAD_DIM + channels)


@triton.jit
def _rotate_store(
    qkv_ptr,
    q_out_ptr,
    cache_ptr,
    index_ptr,
    position_ptr,
    inv_freq_ptr,
    scale,
    slot_stride,
    kv_stride,
    head_stride,
    position_stride,
    HEADS: tl.constexpr,
    KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    ROTATED_PAIRS: tl.constexpr,
):
    # One (row, head) of q or k: rotate its interleaved pairs (x0, x1) -> (x0 c - x1 s, x1 c + x0 s)
    # on the first ROTATED_PAIRS pairs (GLM's partial rotary), then store q for attention, or k and
    # its v into the row's slot at the row's write index.
    row = tl.program_id(0)
    head = tl.program_id(1)
    pairs = tl.arange(0, HEAD_DIM // 2)
    rotated = pairs < ROTATED_PAIRS
    angle = tl.load(position_ptr + row).to(tl.float32) * tl.load(inv_freq_ptr + pairs, mask=rotated, other=0.0)
    cos = tl.where(rotated, tl.cos(angle) * scale, 1.0)
    sin = tl.where(rotated, tl.sin(angle) * scale, 0.0)
    first, second = _rotated_pairs(qkv_ptr, row, head, cos, sin, HEADS, KV_HEADS, HEAD_DIM)
    if head < HEADS:
        _store_pairs(q_out_ptr + (row * HEADS + head) * HEAD_DIM, first, second, HEAD_DIM)
    else:
        kv_head = head - HEADS
        index = tl.load(index_ptr + row)
        target = cache_ptr + row * slot_stride + kv_head * head_stride + index * position_stride
        _store_pairs(target, first, second, HEAD_DIM)
        tl.store(target + kv_stride + tl.arange(0, HEAD_DIM), _value(qkv_ptr, row, kv_head, HEADS, KV_HEADS, HEAD_DIM))


@triton.jit(do_not_specialize=["size"])
def _prompt_rotate_store(
    qkv_ptr,
    cos_ptr,
    sin_ptr,
    slots_ptr,
    q_out_ptr,
    kv_out_ptr,
    cache_ptr,
    size,
    slot_stride,
    kv_stride,
    head_stride,
    position_stride,
    HEADS: tl.constexpr,
    KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    # One (row, head) of q or k of prompts laid side by side, `size` rows each: rotate its interleaved
    # pairs at the row's own angles (cos/sin [rows, head dim], each value twice, 1 and 0 past the
    # rotated channels), then q for attention, or k and its v both for attention ([prompts, 2,
    # kv heads, size, head dim]) and into the prompt's slot at the row's position.
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    prompt = row // size
    position = row % size
    pairs = tl.arange(0, HEAD_DIM // 2)
    cos = tl.load(cos_ptr + row * HEAD_DIM + 2 * pairs).to(tl.float32)
    sin = tl.load(sin_ptr + row * HEAD_DIM + 2 * pairs).to(tl.float32)
    first, second = _rotated_pairs(qkv_ptr, row, head, cos, sin, HEADS, KV_HEADS, HEAD_DIM)
    if head < HEADS:
        _store_pairs(q_out_ptr + (row * HEADS + head) * HEAD_DIM, first, second, HEAD_DIM)
    else:
        kv_head = head - HEADS
        channels = tl.arange(0, HEAD_DIM)
        value = _value(qkv_ptr, row, kv_head, HEADS, KV_HEADS, HEAD_DIM)
        out = kv_out_ptr + ((prompt * 2 * KV_HEADS + kv_head) * size + position) * HEAD_DIM
        _store_pairs(out, first, second, HEAD_DIM)
        tl.store(out + KV_HEADS * size * HEAD_DIM + channels, value)
        slot = tl.load(slots_ptr + prompt)
        target = cache_ptr + slot * slot_stride + kv_head * head_stride + position * position_stride
        _store_pairs(target, first, second, HEAD_DIM)
        tl.store(target + kv_stride + channels, value)


@triton.jit(do_not_specialize=["slice_length", "splits"])
def _attend_slice(
    q_ptr,
    cache_ptr,
    index_ptr,
    part_out_ptr,
    part_max_ptr,
    part_sum_ptr,
    scale,
    slot_stride,
    kv_stride,
    head_stride,
    position_stride,
    slice_length,
    splits,
    HEADS: tl.constexpr,
    GROUP: tl.constexpr,
    GROUP_BLOCK: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
    PDL: tl.constexpr,
):
    # The query heads of one KV head of one row, over one slice of the row's visible positions
    # (0 ..= its write index): an unnormalised partial output with its running max and sum.
    dependent.wait(PDL)
    row = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    group = tl.arange(0, GROUP_BLOCK)
    channels = tl.arange(0, HEAD_DIM)
    in_group = group < GROUP
    heads = kv_head * GROUP + group
    q = tl.load(
        q_ptr + (row * HEADS + heads[:, None]) * HEAD_DIM + channels[None, :], mask=in_group[:, None], other=0.0
    )
    length = tl.load(index_ptr + row) + 1
    keys = cache_ptr + row * slot_stride + kv_head * head_stride
    best = tl.full((GROUP_BLOCK,), -1.0e30, dtype=tl.float32)
    total = tl.zeros((GROUP_BLOCK,), dtype=tl.float32)
    acc = tl.zeros((GROUP_BLOCK, HEAD_DIM), dtype=tl.float32)
    start = split * slice_length
    for block in range(0, slice_length, BLOCK_N):
        positions = start + block + tl.arange(0, BLOCK_N)
        visible = positions < length
        k = tl.load(keys + positions[:, None] * position_stride + channels[None, :], mask=visible[:, None], other=0.0)
        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        scores = tl.where(visible[None, :], scores, -1.0e30)
        new_best = tl.maximum(best, tl.max(scores, axis=1))
        weights = tl.where(visible[None, :], tl.exp(scores - new_best[:, None]), 0.0)
        shrink = tl.exp(best - new_best)
        total = total * shrink + tl.sum(weights, axis=1)
        v = tl.load(
            keys + kv_stride + positions[:, None] * position_stride + channels[None, :],
            mask=visible[:, None],
            other=0.0,
        )
        acc = acc * shrink[:, None] + tl.dot(weights.to(v.dtype), v, input_precision=PRECISION)
        best = new_best
    dependent.release(PDL)
    part = (row * HEADS + heads) * splits + split
    tl.store(part_out_ptr + part[:, None] * HEAD_DIM + channels[None, :], acc, mask=in_group[:, None])
    tl.store(part_max_ptr + part, best, mask=in_group)
    tl.store(part_sum_ptr + part, total, mask=in_group)


@triton.jit(do_not_specialize=["splits"])
def _attend_merge(
    part_out_ptr,
    part_max_ptr,
    part_sum_ptr,
    out_ptr,
    splits,
    SPLIT_BLOCK: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PDL: tl.constexpr,
):
    # One (row, query head): the slices' partial outputs weighted by their share of the softmax.
    dependent.wait(PDL)
    row_head = tl.program_id(0)
    slices = tl.arange(0, SPLIT_BLOCK)
    channels = tl.arange(0, HEAD_DIM)
    used = slices < splits
    best = tl.load(part_max_ptr + row_head * splits + slices, mask=used, other=-1.0e30)
    total = tl.load(part_sum_ptr + row_head * splits + slices, mask=used, other=0.0)
    weight = tl.where(used, tl.exp(best - tl.max(best, axis=0)), 0.0)
    parts = tl.load(
        part_out_ptr + (row_head * splits + slices[:, None]) * HEAD_DIM + channels[None, :],
        mask=used[:, None],
        other=0.0,
    )
    out = tl.sum(parts * weight[:, None], axis=0) / tl.sum(total * weight, axis=0)
    dependent.release(PDL)
    tl.store(out_ptr + row_head * HEAD_DIM + channels, out.to(out_ptr.dtype.element_ty))


def _power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _row_warps(block: int) -> int:
    """Warps for a kernel that takes one row of `block` entries in one block (the norms)."""
    return max(1, min(16, block // 256))


def add_norm(hidden, delta, delta_norm: tuple, next_norm: tuple):
    """reference.add_norm as one kernel: (hidden + rms_norm(delta), rms_norm of that sum)."""
    import torch

    rows, width = hidden.shape
    hidden_out, normed = torch.empty_like(hidden), torch.empty_like(hidden)
    block = _power_of_two(width)
    _add_norm[(rows,)](
        hidden,
        delta,
        delta_norm[0],
        next_norm[0],
        hidden_out,
        normed,
        float(delta_norm[1]),
        float(next_norm[1]),
        WIDTH=width,
        BLOCK=block,
        num_warps=_row_warps(block),
        **dependent.options(hidden),
    )
    return hidden_out, normed


def embed_norm(ids, table, norm: tuple):
    """(F.embedding(ids, table), F.rms_norm of that with `norm`) as one kernel: [rows, width] each."""
    import torch

    rows, (vocab, width) = ids.shape[0], table.shape
    hidden = torch.empty((rows, width), dtype=table.dtype, device=table.device)
    normed = torch.empty_like(hidden)
    block = _power_of_two(width)
    _embed_norm[(rows,)](
        ids,
        table,
        norm[0],
        hidden,
        normed,
        float(norm[1]),
        vocab,
        WIDTH=width,
        BLOCK=block,
        num_warps=_row_warps(block),
        **dependent.options(hidden),
    )
    return hidden, normed


def gated_silu(gate_up):
    """reference.gated_silu as one kernel: up * silu(gate) of a [rows, 2 x width] tensor."""
    import torch

    rows, width = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty((rows, width), dtype=gate_up.dtype, device=gate_up.device)
    block = min(1024, _power_of_two(width))
    _gated_silu[(rows, triton.cdiv(width, block))](gate_up, out, WIDTH=width, BLOCK=block, num_warps=4)
    return out


def rotate_store(qkv, cache, index, position, inv_freq, scale: float, heads: int, kv_heads: int):
    """Rotate q and k of every row at its position; write k and v into `cache` ([slots, 2, kv heads,
    context, head dim]) at the row's index in slot `row`. Returns the rotated q [rows, heads, head dim]."""
    import torch

    rows, _, head_dim = qkv.shape
    q = torch.empty((rows, heads, head_dim), dtype=qkv.dtype, device=qkv.device)
    _rotate_store[(rows, heads + kv_heads)](
        qkv,
        q,
        cache,
        index,
        position,
        inv_freq,
        float(scale),
        *cache.stride()[:4],
        HEADS=heads,
        KV_HEADS=kv_heads,
        HEAD_DIM=head_dim,
        ROTATED_PAIRS=inv_freq.numel(),
        num_warps=1,
    )
    return q


def prompt_rotate_store(qkv, cos, sin, cache, slots, size: int, heads: int, kv_heads: int):
    """Prompts side by side, `size` rows each (qkv [prompts x size, heads + 2 kv heads, head dim]), q and
    k rotated at each row's angles (`cos`/`sin` [rows, 1, head dim], widened: ModelRunner._widen), as
    reference.rotate_with_matrix rotates them; k and v of prompt i written into slot slots[i] of
    `cache` at positions 0 .. size - 1. Returns (q [rows, heads, head dim], k and v [prompts, 2, kv
    heads, size, head dim]) for attention."""
    import torch

    rows, _, head_dim = qkv.shape
    if rows % size or not (qkv.is_contiguous() and cos.is_contiguous() and sin.is_contiguous()):
        raise ValueError(f"{rows} rows of q/k/v are not prompts of {size}, or not contiguous")
    q = torch.empty((rows, heads, head_dim), dtype=qkv.dtype, device=qkv.device)
    kv = torch.empty((rows // size, 2, kv_heads, size, head_dim), dtype=cache.dtype, device=qkv.device)
    _prompt_rotate_store[(rows, heads + kv_heads)](
        qkv,
        cos,
        sin,
        slots,
        q,
        kv,
        cache,
        size,
        *cache.stride()[:4],
        HEADS=heads,
        KV_HEADS=kv_heads,
        HEAD_DIM=head_dim,
        num_warps=1,
    )
    return q, kv


class Ops:
    """The step's operations (as reference.Ops offers them) as Triton kernels: add_norm, the gated
    activation (for SiLU, else `eager`'s) and, at one row, the matrix products (inference/ops/matvec.py)
    with the gated activation and q/k/v's rotation and KV store folded in; else rotation is part of
    rotate_store."""

    def __init__(self, eager):
        self.add_norm = add_norm
        self.silu = eager.activation is None
        self.gated = gated_silu if self.silu else eager.gated

    def linear(self, x, weight, bias=None):
        if _one_row(x, weight):
            return matvec.linear(x, weight, bias)
        return F.linear(x, weight, bias)

    def logits(self, x, weight, bias=None, rows=None):
        """The LM head's product as float32 (rounded to the weights' dtype first, as .float() of it),
        of x's `rows` (an index tensor on the device) where given: one row picked by the kernel."""
        import torch

        if rows is not None and rows.numel() == 1 and x.is_contiguous() and weight.is_contiguous():
            return matvec.linear(x, weight, bias, dtype=torch.float32, row=rows)
        if rows is not None:
            x = x.index_select(0, rows)
        if _one_row(x, weight):
            return matvec.linear(x, weight, bias, dtype=torch.float32)
        return F.linear(x, weight, bias).float()

    def gated_product(self, x, weight):
        if self.silu and _one_row(x, weight):
            return matvec.linear(x, weight, gated=True)
        return self.gated(F.linear(x, weight))

    def qkv_rotate_store(
        self, x, weight, bias, cache, index, position, inv_freq, scale: float, heads: int, kv_heads: int
    ):
        """rotate_store of x's q/k/v product (weight, bias): the rotated q [rows, heads, head dim]."""
        if _one_row(x, weight) and matvec.rotates_in_product(weight):
            return matvec.qkv_rotate_store(x, weight, bias, cache, index, position, inv_freq, scale, heads, kv_heads)
        qkv = self.linear(x, weight, bias).view(x.shape[0], heads + 2 * kv_heads, cache.shape[-1])
        return rotate_store(qkv, cache, index, position, inv_freq, scale, heads, kv_heads)


def _one_row(x, weight) -> bool:
    """Whether matvec.linear takes this product: one row, both laid out by rows."""
    return x.shape[0] == 1 and x.is_contiguous() and weight.is_contiguous()


def attend(q, cache, index, length: int):
    """Each row's q heads over its slot's positions 0..=index (within the first `length`), grouped
    query attention: returns [rows, heads x head dim]."""
    import torch

    rows, heads, head_dim = q.shape
    kv_heads = cache.shape[2]
    group = heads // kv_heads
    splits = max(1, min(MAX_SPLITS, triton.cdiv(length, BLOCK_KEYS)))
    slice_length = triton.cdiv(triton.cdiv(length, splits), BLOCK_KEYS) * BLOCK_KEYS
    part_out = torch.empty((rows, heads, splits, head_dim), dtype=torch.float32, device=q.device)
    part_max = torch.empty((rows, heads, splits), dtype=torch.float32, device=q.device)
    part_sum = torch.empty_like(part_max)
    _attend_slice[(rows, kv_heads, splits)](
        q,
        cache,
        index,
        part_out,
        part_max,
        part_sum,
        head_dim**-0.5,
        *cache.stride()[:4],
        slice_length,
        splits,
        HEADS=heads,
        GROUP=group,
        GROUP_BLOCK=max(16, _power_of_two(group)),
        HEAD_DIM=head_dim,
        BLOCK_N=BLOCK_KEYS,
        # float32 served as float32, not TF32 (the tests compare tokens with the eager step)
        PRECISION="ieee" if q.dtype == torch.float32 else None,
        num_warps=4,
        **dependent.options(q),
    )
    out = torch.empty((rows, heads, head_dim), dtype=q.dtype, device=q.device)
    # One warp a head: at 4 warps the merge took 2.23 us on an H200, at one 1.70 (a tile of only the
    # slices used, one kernel per number of slices, was slower: 1.91 us)
    _attend_merge[(rows * heads,)](
        part_out,
        part_max,
        part_sum,
        out,
        splits,
        SPLIT_BLOCK=_power_of_two(MAX_SPLITS),
        HEAD_DIM=head_dim,
        num_warps=1,
        **dependent.options(q),
    )
    return out.view(rows, heads * head_dim)
