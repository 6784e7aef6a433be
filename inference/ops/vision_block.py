"""The vision encoder's small work as Triton kernels, for a GPU: a block in 10 kernels where the
model's own modules launch about 40.

Replayed as a CUDA graph (inference/vision.py), a 336 x 336 image's pass still took 5.4 ms on an
H200 where its weights and arithmetic would take under 2 (docs/BENCHMARKS.md): most of each
block's kernels were elementwise, each a few microseconds over a tensor that stays in L2. The
model's RMSNorm alone launches about seven (to float32, square, mean, add and rsqrt, multiply,
back, times the weight), its rotary about a dozen (q and k to float32, the halves' swap, products
and sums, back). Here a residual add with the next norm is one kernel, q and k's rotation one,
up * silu(gate) one; the products and attention stay PyTorch's. Each computes what the modules
compute, in the same order and with the same roundings (float32 inside, rounded where the modules
round): the encoder checks its features against the model's own before it serves
(VisionEncoder.features).

Written for the Triton interpreter too (TRITON_INTERPRET=1), which runs them on a CPU in the tests.
"""

import triton
import triton.language as tl


@triton.jit
def _add_norm(
    hidden_ptr,
    delta_ptr,
    weight_ptr,
    hidden_out_ptr,
    normed_out_ptr,
    eps,
    WIDTH: tl.constexpr,
    BLOCK: tl.constexpr,
    ADD: tl.constexpr,
):
    # hidden + delta (ADD; rounded to the storage dtype, as the modules' residual add), then
    # Glm4vRMSNorm of it: in float32 x * rsqrt(mean(x^2) + eps), rounded, times the weight, rounded.
    row = tl.program_id(0).to(tl.int64)
    offsets = tl.arange(0, BLOCK)
    inside = offsets < WIDTH
    hidden = tl.load(hidden_ptr + row * WIDTH + offsets, mask=inside, other=0.0)
    weight = tl.load(weight_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    if ADD:
        delta = tl.load(delta_ptr + row * WIDTH + offsets, mask=inside, other=0.0).to(tl.float32)
        hidden = (hidden.to(tl.float32) + delta).to(hidden_out_ptr.dtype.element_ty)
        tl.store(hidden_out_ptr + row * WIDTH + offsets, hidden, mask=inside)
    x = hidden.to(tl.float32)
    normed = (x * tl.rsqrt(tl.sum(x * x, axis=0) / WIDTH + eps)).to(normed_out_ptr.dtype.element_ty)
    normed = (normed.to(tl.float32) * weight).to(normed_out_ptr.dtype.element_ty)
    tl.store(normed_out_ptr + row * WIDTH + offsets, normed, mask=inside)


@triton.jit
def _rotate_qk(
    qkv_ptr,
    cos_ptr,
    sin_ptr,
    q_out_ptr,
    k_out_ptr,
    HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_HEADS: tl.constexpr,
):
    # One token: its q and k heads of the q/k/v product [tokens, 3, heads, head dim] rotated as
    # apply_rotary_pos_emb_vision does, in float32: x * cos + rotate_half(x) * sin, rotate_half
    # taking (x1, x2) halves to (-x2, x1); written [tokens, heads, head dim] each.
    token = tl.program_id(0).to(tl.int64)
    heads = tl.arange(0, BLOCK_HEADS)  # q's heads, then k's
    channels = tl.arange(0, HEAD_DIM)
    half: tl.constexpr = HEAD_DIM // 2
    inside = (heads < 2 * HEADS)[:, None]
    row = qkv_ptr + token * 3 * HEADS * HEAD_DIM + heads[:, None] * HEAD_DIM
    x = tl.load(row + channels[None, :], mask=inside, other=0.0).to(tl.float32)
    partner = tl.load(row + ((channels + half) % HEAD_DIM)[None, :], mask=inside, other=0.0).to(tl.float32)
    partner = tl.where((channels < half)[None, :], -partner, partner)
    cos = tl.load(cos_ptr + token * HEAD_DIM + channels).to(tl.float32)[None, :]
    sin = tl.load(sin_ptr + token * HEAD_DIM + channels).to(tl.float32)[None, :]
    rotated = (x * cos + partner * sin).to(q_out_ptr.dtype.element_ty)
    at = token * HEADS * HEAD_DIM + (heads % HEADS)[:, None] * HEAD_DIM + channels[None, :]
    tl.store(q_out_ptr + at, rotated, mask=(heads < HEADS)[:, None])
    tl.store(k_out_ptr + at, rotated, mask=inside & (heads >= HEADS)[:, None])


@triton.jit
def _silu_mul(gate_ptr, up_ptr, out_ptr, n, BLOCK: tl.constexpr):
    # F.silu(gate) * up, each rounded to the storage dtype as the modules' two operations round them.
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    gate = tl.load(gate_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    up = tl.load(up_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    silu = (gate / (1.0 + tl.exp(-gate))).to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + offsets, (silu * up).to(out_ptr.dtype.element_ty), mask=inside)


def norm(hidden, weight, eps: float):
    """Glm4vRMSNorm(hidden) with this weight and eps, as one kernel: [rows, width]."""
    import torch

    normed = torch.empty_like(hidden)
    _launch_norm(hidden, hidden, weight, eps, hidden, normed, add=False)
    return normed


def add_norm(hidden, delta, weight, eps: float):
    """(hidden + delta, Glm4vRMSNorm of that sum with this weight and eps) as one kernel."""
    import torch

    total, normed = torch.empty_like(hidden), torch.empty_like(hidden)
    _launch_norm(hidden, delta, weight, eps, total, normed, add=True)
    return total, normed


def _launch_norm(hidden, delta, weight, eps, total, normed, add: bool) -> None:
    rows, width = hidden.shape
    if not (hidden.is_contiguous() and delta.is_contiguous() and delta.shape == hidden.shape):
        raise ValueError("the norms take contiguous [rows, width] tensors of one shape")
    block = triton.next_power_of_2(width)
    warps = max(1, min(8, block // 256))
    _add_norm[(rows,)](
        hidden, delta, weight, total, normed, float(eps), WIDTH=width, BLOCK=block, ADD=add, num_warps=warps
    )


def rotate_qk(qkv, cos, sin, heads: int):
    """apply_rotary_pos_emb_vision's q and k of the q/k/v product `qkv` [tokens, 3 x heads x head dim]
    with `cos`, `sin` [tokens, head dim]: (q, k), [tokens, heads, head dim] each."""
    import torch

    tokens = qkv.shape[0]
    head_dim = qkv.shape[1] // (3 * heads)
    if qkv.shape[1] != 3 * heads * head_dim or head_dim & (head_dim - 1) or not qkv.is_contiguous():
        raise ValueError(f"q/k/v of shape {tuple(qkv.shape)}: contiguous, 3 x {heads} heads of a power of two wanted")
    if cos.shape != (tokens, head_dim) or sin.shape != cos.shape or not (cos.is_contiguous() and sin.is_contiguous()):
        raise ValueError(f"cos and sin of shape {tuple(cos.shape)}: contiguous ({tokens}, {head_dim}) wanted")
    q = torch.empty((tokens, heads, head_dim), dtype=qkv.dtype, device=qkv.device)
    k = torch.empty_like(q)
    _rotate_qk[(tokens,)](
        qkv, cos, sin, q, k, HEADS=heads, HEAD_DIM=head_dim, BLOCK_HEADS=triton.next_power_of_2(2 * heads), num_warps=4
    )
    return q, k


def silu_mul(gate, up):
    """F.silu(gate) * up as one kernel (tensors of one shape, contiguous)."""
    import torch

    if gate.shape != up.shape or not (gate.is_contiguous() and up.is_contiguous()):
        raise ValueError("gate and up: contiguous tensors of one shape")
    out = torch.empty_like(gate)
    block = 1024
    _silu_mul[(triton.cdiv(gate.numel(), block),)](gate, up, out, gate.numel(), BLOCK=block, num_warps=4)
    return out
