"""The decoding step's Triton kernels compute what the eager operations compute.

On a CPU they run in Triton's interpreter (TRITON_INTERPRET=1, set by tests/env.py where there is
no GPU); on a GPU (pytest -m gpu) compiled, in bfloat16 as served and in float32.
"""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from inference.ops import reference

pytest.importorskip("triton")


def test_add_norm(setup):
    kernels, device, dtype, tolerance = setup
    torch.manual_seed(0)
    for rows, width in ((1, 64), (3, 96), (2, 4096)):
        hidden, delta = (torch.randn(rows, width, device=device, dtype=dtype) for _ in range(2))
        norms = [(torch.rand(width, device=device, dtype=dtype) + 0.5, eps) for eps in (1e-5, 1e-6)]
        expected = reference.add_norm(hidden, delta, *norms)
        got = kernels.add_norm(hidden, delta, *norms)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, **tolerance)


def test_embed_norm(setup):
    """The token's embedding and its norm in one kernel, as F.embedding then F.rms_norm; an id
    outside the vocabulary reads zeros, not memory past the table."""
    kernels, device, dtype, tolerance = setup
    torch.manual_seed(1)
    table = torch.randn(50, 96, device=device, dtype=dtype)
    norm = (torch.rand(96, device=device, dtype=dtype) + 0.5, 1e-6)
    ids = torch.tensor([3, 49, 0], device=device)
    hidden, normed = kernels.embed_norm(ids, table, norm)
    assert torch.equal(hidden, F.embedding(ids, table))
    torch.testing.assert_close(normed, F.rms_norm(hidden, (96,), *norm), **tolerance)
    hidden, normed = kernels.embed_norm(torch.tensor([50, -1], device=device), table, norm)
    assert not hidden.any() and not normed.any()


def test_gated_silu(setup):
    kernels, device, dtype, tolerance = setup
    gate_up = torch.randn(3, 2 * 1100, device=device, dtype=dtype)
    torch.testing.assert_close(kernels.gated_silu(gate_up), reference.gated_silu(gate_up), **tolerance)


@pytest.mark.parametrize("outputs, inputs", [(40, 512), (37, 700), (6, 1024), (1, 300)])
def test_matvec_matches_linear(setup, outputs, inputs):
    """Bands of outputs that do not divide the width (37, 6 of 8 or 16), inputs that do not divide
    the block (700, and 300 within the first tile, loaded before the others), with and without bias,
    and the gated form against F.linear then gated_silu."""
    _, device, dtype, tolerance = setup
    from inference.ops import matvec

    torch.manual_seed(outputs)
    x = torch.randn(1, inputs, device=device, dtype=dtype)
    weight = (torch.randn(outputs, inputs, device=device) / inputs**0.5).to(dtype)
    bias = torch.randn(outputs, device=device, dtype=dtype)
    torch.testing.assert_close(matvec.linear(x, weight), F.linear(x, weight), **tolerance)
    torch.testing.assert_close(matvec.linear(x, weight, bias), F.linear(x, weight, bias), **tolerance)
    # float32 out (the step's logits): the same values, rounded to the weights' dtype first
    assert torch.equal(matvec.linear(x, weight, bias, dtype=torch.float32), matvec.linear(x, weight, bias).float())
    gate_up = (torch.randn(2 * outputs, inputs, device=device) / inputs**0.5).to(dtype)
    expected = reference.gated_silu(F.linear(x, gate_up))
    torch.testing.assert_close(matvec.linear(x, gate_up, gated=True), expected, **tolerance)
    for wrong in (x[:, 1:].contiguous(), x.expand(2, -1).contiguous()):
        with pytest.raises(ValueError, match="one row of"):
            matvec.linear(wrong, weight)
    with pytest.raises(ValueError, match="even number of weight rows and no bias"):
        matvec.linear(x, gate_up, torch.zeros(2 * outputs, device=device, dtype=dtype), gated=True)


def test_the_logits_of_a_row_picked_on_the_device(setup):
    """A prompt's last token's logits: the kernel reads the row an index tensor names, the same bits
    as the product of that row alone; Ops and reference.Ops agree, and more than one row is picked
    by index_select first."""
    kernels, device, dtype, tolerance = setup
    from inference.ops import matvec

    torch.manual_seed(7)
    x = torch.randn(5, 96, device=device, dtype=dtype)
    weight = (torch.randn(40, 96, device=device) / 10).to(dtype)
    bias = torch.randn(40, device=device, dtype=dtype)
    ops, eager = kernels.Ops(reference.Ops(None, None, compiled=False)), reference.Ops
    for picked in (0, 3, 4):
        row = torch.tensor([picked], device=device)
        alone = matvec.linear(x[picked : picked + 1].contiguous(), weight, bias, dtype=torch.float32)
        assert torch.equal(matvec.linear(x, weight, bias, dtype=torch.float32, row=row), alone)
        assert torch.equal(ops.logits(x, weight, bias, row), alone)
        torch.testing.assert_close(eager.logits(x, weight, bias, row), alone, **tolerance)
    rows = torch.tensor([1, 4], device=device)
    torch.testing.assert_close(ops.logits(x, weight, bias, rows), eager.logits(x, weight, bias, rows), **tolerance)
    with pytest.raises(ValueError, match="one row index"):
        matvec.linear(x, weight, row=rows)


def test_the_step_ops_run_matvec_at_one_row_only(setup, monkeypatch):
    """kernels.Ops: one row through matvec, more rows or a weight not laid out by rows through
    F.linear, with the same answers; the gated product too, against reference.Ops's."""
    kernels, device, dtype, tolerance = setup
    eager = reference.Ops(None, None, compiled=False)
    ops = kernels.Ops(eager)
    calls = []
    run = kernels.matvec.linear
    monkeypatch.setattr(
        kernels.matvec, "linear", lambda x, *args, **kw: calls.append(x.shape[0]) or run(x, *args, **kw)
    )
    weight = (torch.randn(48, 256, device=device) / 16).to(dtype)
    for rows in (1, 2):
        x = torch.randn(rows, 256, device=device, dtype=dtype)
        torch.testing.assert_close(ops.linear(x, weight), F.linear(x, weight), **tolerance)
        torch.testing.assert_close(ops.linear(x, weight.t().contiguous().t()), F.linear(x, weight), **tolerance)
        torch.testing.assert_close(ops.gated_product(x, weight), eager.gated_product(x, weight), **tolerance)
    assert calls == [1, 1]  # the plain and the gated product at one row; the transposed weight not


@pytest.mark.parametrize("heads, kv_heads, head_dim, rotated", [(4, 2, 16, 4), (6, 1, 8, 2)])
def test_qkv_product_rotates_and_stores_as_rotate_store(setup, heads, kv_heads, head_dim, rotated):
    """The q/k/v product with the rotation and KV store folded in writes what the product followed
    by rotate_store writes into the same places and nowhere else; Ops takes the folded form at one row
    and the two kernels at more. Bit for bit in the interpreter and in bfloat16; compiled in float32
    a few rotated entries of q and k differed in their last bit on an H200 (of q, second halves of
    pairs; 1.2e-7 at most), so there within two units in the last place."""
    kernels, device, dtype, tolerance = setup
    from inference.ops import matvec

    torch.manual_seed(heads)
    outputs, inputs = (heads + 2 * kv_heads) * head_dim, 96
    x = torch.randn(1, inputs, device=device, dtype=dtype)
    weight = (torch.randn(outputs, inputs, device=device) / inputs**0.5).to(dtype)
    bias = torch.randn(outputs, device=device, dtype=dtype)
    index, position = torch.tensor([7], device=device), torch.tensor([1234], device=device)
    inv_freq = 1.0 / (10000 ** (torch.arange(rotated, device=device).float() / rotated))
    caches = [torch.zeros(2, 2, kv_heads, 12, head_dim, device=device, dtype=dtype) for _ in range(2)]
    qkv = matvec.linear(x, weight, bias).view(1, heads + 2 * kv_heads, head_dim)
    want = kernels.rotate_store(qkv, caches[0], index, position, inv_freq, 0.5, heads, kv_heads)
    got = matvec.qkv_rotate_store(x, weight, bias, caches[1], index, position, inv_freq, 0.5, heads, kv_heads)
    if device == "cuda" and dtype == torch.float32:
        exact = {"atol": 1e-6, "rtol": 2.5e-7}
        torch.testing.assert_close(got, want, **exact)
        torch.testing.assert_close(caches[1], caches[0], **exact)
        assert torch.equal(caches[1][:, 1], caches[0][:, 1])  # the values, not rotated
    else:
        assert torch.equal(got, want) and torch.equal(caches[1], caches[0])
    assert caches[1][0, :, :, 7].abs().sum() > 0 and not caches[1][1].any()
    ops = kernels.Ops(reference.Ops(None, None, compiled=False))
    two = torch.cat((x, x))
    q = ops.qkv_rotate_store(
        two, weight, bias, caches[1], index.repeat(2), position.repeat(2), inv_freq, 0.5, heads, kv_heads
    )
    torch.testing.assert_close(q[:1], want, **tolerance)
    with pytest.raises(ValueError, match="are not q, k and v"):
        matvec.qkv_rotate_store(x, weight, bias, caches[1], index, position, inv_freq, 0.5, heads + 1, kv_heads)


def _rotate_reference(x, position, inv_freq, scale):
    """GLM's partial interleaved rotary, written out: pairs (2i, 2i+1) for i < len(inv_freq)."""
    out = x.float().clone()
    angle = position.float()[:, None] * inv_freq[None]  # rows, pairs
    cos, sin = (angle.cos() * scale)[:, None], (angle.sin() * scale)[:, None]
    pairs = inv_freq.numel()
    even, odd = x[..., 0 : 2 * pairs : 2].float(), x[..., 1 : 2 * pairs : 2].float()
    out[..., 0 : 2 * pairs : 2] = even * cos - odd * sin
    out[..., 1 : 2 * pairs : 2] = odd * cos + even * sin
    return out.to(x.dtype)


@pytest.mark.parametrize("heads, kv_heads, head_dim, rotated", [(4, 2, 16, 4), (32, 2, 128, 32)])
def test_rotate_store(setup, heads, kv_heads, head_dim, rotated):
    kernels, device, dtype, tolerance = setup
    rows, slots, context = 3, 4, 40
    qkv = torch.randn(rows, heads + 2 * kv_heads, head_dim, device=device, dtype=dtype)
    cache = torch.zeros(slots, 2, kv_heads, context, head_dim, device=device, dtype=dtype)
    index = torch.tensor([5, 0, 39], device=device)
    position = torch.tensor([9, 0, 1234], device=device)
    inv_freq = 1.0 / (10000 ** (torch.arange(rotated, device=device).float() / rotated))
    q = kernels.rotate_store(qkv, cache, index, position, inv_freq, 1.0, heads, kv_heads)
    torch.testing.assert_close(q, _rotate_reference(qkv[:, :heads], position, inv_freq, 1.0), **tolerance)
    k = _rotate_reference(qkv[:, heads : heads + kv_heads], position, inv_freq, 1.0)
    for row in range(rows):
        torch.testing.assert_close(cache[row, 0, :, index[row]], k[row], **tolerance)
        torch.testing.assert_close(cache[row, 1, :, index[row]], qkv[row, heads + kv_heads :])
    written = torch.zeros(slots, context, dtype=torch.bool)
    written[torch.arange(rows), index.cpu()] = True
    assert not cache.abs().sum(dim=(1, 2, 4)).cpu()[~written].any()  # nothing else was touched
    # The matrix form the eager step uses agrees (on the rotated channels and the pass-through ones).
    turn = torch.zeros(head_dim, head_dim, device=device, dtype=dtype)
    pairs = torch.arange(0, 2 * rotated, 2, device=device)
    turn[pairs + 1, pairs], turn[pairs, pairs + 1] = -1, 1
    freqs = (position[:, None].float() * inv_freq[None]).repeat_interleave(2, dim=-1)
    ones = torch.ones(rows, head_dim - 2 * rotated, device=device)
    cos = torch.cat((freqs.cos(), ones), dim=-1)[:, None].to(dtype)
    sin = torch.cat((freqs.sin(), ones * 0), dim=-1)[:, None].to(dtype)
    torch.testing.assert_close(reference.rotate_with_matrix(qkv[:, :heads], cos, sin, turn), q, **tolerance)


@pytest.mark.parametrize("count, size", [(1, 5), (3, 4)])
def test_prompt_rotate_store_is_the_eager_rotation_and_store(setup, count, size):
    """Prompts side by side (ModelRunner.prompt_pass): q and k rotated at each row's own angles as the
    matrix form rotates them, k and v for attention and in each prompt's slot, no other slot touched."""
    kernels, device, dtype, tolerance = setup
    torch.manual_seed(count)
    heads, kv_heads, head_dim, rotated, slots, context = 4, 2, 16, 4, 4, 8
    rows = count * size
    qkv = torch.randn(rows, heads + 2 * kv_heads, head_dim, device=device, dtype=dtype)
    angles = (torch.rand(rows, rotated, device=device) * 6).repeat_interleave(2, dim=-1)
    ones = torch.ones(rows, head_dim - 2 * rotated, device=device)
    cos = torch.cat((angles.cos(), ones), dim=-1)[:, None].to(dtype)
    sin = torch.cat((angles.sin(), ones * 0), dim=-1)[:, None].to(dtype)
    turn = torch.zeros(head_dim, head_dim, device=device, dtype=dtype)
    pairs = torch.arange(0, 2 * rotated, 2, device=device)
    turn[pairs + 1, pairs], turn[pairs, pairs + 1] = -1, 1
    cache = torch.zeros(slots, 2, kv_heads, context, head_dim, device=device, dtype=dtype)
    slot_of = torch.tensor([2, 0, 3][:count], device=device)

    q, kv = kernels.prompt_rotate_store(qkv, cos, sin, cache, slot_of, size, heads, kv_heads)
    expected = reference.rotate_with_matrix(qkv[:, : heads + kv_heads], cos, sin, turn)
    torch.testing.assert_close(q, expected[:, :heads], **tolerance)
    keys = expected[:, heads:].view(count, size, kv_heads, head_dim).transpose(1, 2)
    values = qkv[:, heads + kv_heads :].view(count, size, kv_heads, head_dim).transpose(1, 2)
    torch.testing.assert_close(kv[:, 0], keys, **tolerance)
    assert torch.equal(kv[:, 1], values)
    for prompt, slot in enumerate(slot_of.tolist()):
        assert torch.equal(cache[slot, 0, :, :size], kv[prompt, 0]) and torch.equal(
            cache[slot, 1, :, :size], values[prompt]
        )
    untouched = [slot for slot in range(slots) if slot not in slot_of.tolist()]
    assert not cache[untouched].any() and not cache[:, :, :, size:].any()


@pytest.mark.parametrize(
    "heads, kv_heads, head_dim, length, indices",
    [(4, 2, 16, 64, [0, 10, 63]), (4, 2, 16, 300, [299, 64, 130]), (32, 2, 128, 1024, [198, 1023, 5])],
)
def test_attend_matches_masked_sdpa(setup, heads, kv_heads, head_dim, length, indices):
    kernels, device, dtype, tolerance = setup
    torch.manual_seed(1)
    rows, context = len(indices), length + 8
    cache = torch.randn(rows + 1, 2, kv_heads, context, head_dim, device=device, dtype=dtype)
    q = torch.randn(rows, heads, head_dim, device=device, dtype=dtype)
    index = torch.tensor(indices, device=device)
    got = kernels.attend(q, cache, index, length)
    visible = torch.arange(length, device=device)[None] <= index[:, None]
    mask = torch.zeros(rows, 1, 1, length, device=device, dtype=dtype).masked_fill(~visible[:, None, None], -torch.inf)
    expected = F.scaled_dot_product_attention(
        q.view(rows, kv_heads, heads // kv_heads, head_dim),
        cache[:rows, 0, :, :length],
        cache[:rows, 1, :, :length],
        attn_mask=mask,
    ).reshape(rows, -1)
    torch.testing.assert_close(got, expected, **tolerance)


def test_what_the_first_kernels_look_up_is_found_ahead_once():
    """prepare_triton (the supervisor, before it forks model processes) leaves in the process what a
    first kernel would otherwise look up at its launch: here the launchers' platform (`file` run once);
    without an NVIDIA driver it passes over libcuda and ptxas instead of failing."""
    from triton.runtime import build

    from inference import ops

    build.platform_key.cache_clear()
    ops.prepare_triton()
    assert build.platform_key.cache_info().currsize == 1
    ops.prepare_triton()  # again: nothing looked up anew
    assert build.platform_key.cache_info().misses == 1


def test_the_modules_a_first_kernel_imports_are_imported_ahead_without_starting_cuda():
    """In a fresh interpreter, as the supervisor before its forks: a child may use CUDA only if the
    parent never started it."""
    code = (
        "import sys, torch\n"
        "from inference import ops\n"
        "assert not any(name in sys.modules for name in ops.FIRST_KERNEL_MODULES)\n"
        "ops.prepare_triton()\n"
        "print(all(name in sys.modules for name in ops.FIRST_KERNEL_MODULES), torch.cuda.is_initialized())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "False"], done.stderr[-2000:]


@pytest.mark.gpu
def test_on_a_gpu_libcuda_ptxas_and_the_kernels_keys_are_found_ahead():
    from triton.backends.nvidia import compiler, driver
    from triton.runtime.jit import JITFunction

    from inference import ops
    from inference.ops import kernels, matvec, vision_block

    jitted = [v for m in (kernels, matvec, vision_block) for v in vars(m).values() if isinstance(v, JITFunction)]
    assert len(jitted) >= 10
    for fn in jitted:
        fn.hash = None  # as a process that never launched them
    driver.libcuda_dirs.cache_clear()
    compiler.get_ptxas_version.cache_clear()
    ops.prepare_triton()
    assert all(fn.hash is not None for fn in jitted)
    assert driver.libcuda_dirs.cache_info().currsize == 1
    arch = torch.cuda.get_device_capability()
    assert compiler.get_ptxas_version.cache_info().currsize >= 1
    compiler.get_ptxas_version(arch[0] * 10 + arch[1])  # the GPU's own architecture: found ahead
    assert compiler.get_ptxas_version.cache_info().hits >= 1


def test_dependent_launch_is_asked_only_of_a_gpu_that_has_it(setup, monkeypatch):
    """Programmatic dependent launch on a GPU of compute capability 9 or more unless STEP_PDL=off,
    never in the interpreter; an unknown STEP_PDL is refused with the choices."""
    _, device, _, _ = setup
    from inference.ops import dependent

    tensor = torch.zeros(1, device=device)
    capable = device == "cuda" and torch.cuda.get_device_capability()[0] >= 9
    for value, dependent_launch in (("auto", capable), ("off", False)):
        monkeypatch.setenv("STEP_PDL", value)
        dependent._capable.cache_clear()
        expected = {"PDL": True, "launch_pdl": True} if dependent_launch else {"PDL": False}
        assert dependent.options(tensor) == expected
    monkeypatch.setenv("STEP_PDL", "fast")
    dependent._capable.cache_clear()
    with pytest.raises(ValueError, match="STEP_PDL must be one of auto, off, not 'fast'"):
        dependent.options(tensor)
    dependent._capable.cache_clear()
