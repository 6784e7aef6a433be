"""The decoding step's elementwise operations: the compiled forms compute what the eager ones do."""

import torch

from inference.ops.reference import Ops, add_norm, gated_silu, rotate_pairs, rotate_with_matrix


def turn_matrix(head_dim: int, width: int) -> torch.Tensor:
    turn = torch.zeros((head_dim, head_dim))
    pairs = torch.arange(0, width, 2)
    turn[pairs + 1, pairs] = -1
    turn[pairs, pairs + 1] = 1
    return turn


def angles(tokens: int, head_dim: int, width: int):
    freqs = (torch.arange(tokens)[:, None] * torch.rand(width // 2)[None]).repeat_interleave(2, dim=-1)
    ones = torch.ones((tokens, head_dim - width))
    return torch.cat((freqs.cos(), ones), -1)[:, None], torch.cat((freqs.sin(), ones * 0), -1)[:, None]


def test_rotating_pairs_equals_the_matrix_form_and_leaves_pass_through_channels():
    qk = torch.randn(5, 6, 16)
    cos, sin = angles(5, 16, 8)
    rotated = rotate_pairs(qk, cos, sin)
    assert torch.equal(rotated, rotate_with_matrix(qk, cos, sin, turn_matrix(16, 8)))
    assert torch.equal(rotated[..., 8:], qk[..., 8:])
    # A pair turns by its angle: (1, 0) at angle a becomes (cos a, sin a).
    unit = torch.zeros(5, 1, 16)
    unit[..., 0] = 1
    turned = rotate_pairs(unit, cos, sin)
    assert torch.allclose(turned[..., 0], cos[..., 0]) and torch.allclose(turned[..., 1], sin[..., 0])


def test_compiled_operations_match_the_eager_ones():
    eager = Ops(turn_matrix(16, 8), None, compiled=False)
    compiled = Ops(turn_matrix(16, 8), None, compiled=True)
    hidden, delta = torch.randn(3, 32), torch.randn(3, 32)
    first, second = (torch.rand(32) + 0.5, 1e-5), (torch.rand(32) + 0.5, 1e-6)
    for got, want in zip(
        compiled.add_norm(hidden, delta, first, second), add_norm(hidden, delta, first, second), strict=True
    ):
        assert torch.allclose(got, want, atol=1e-5)
    qk = torch.randn(3, 6, 16)
    cos, sin = angles(3, 16, 8)
    assert torch.allclose(compiled.rotate(qk, cos, sin), eager.rotate(qk, cos, sin), atol=1e-6)
    gate_up = torch.randn(3, 64)
    assert torch.allclose(compiled.gated(gate_up), gated_silu(gate_up), atol=1e-6)
    assert compiled.compiled


def test_a_compile_failure_falls_back_to_the_eager_form_for_good():
    ops = Ops(turn_matrix(16, 8), None, compiled=False)
    ops.compiled = True
    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("no Triton here")

    guarded = ops._guarded(broken, gated_silu)
    gate_up = torch.randn(2, 8)
    assert torch.equal(guarded(gate_up), gated_silu(gate_up))
    assert torch.equal(guarded(gate_up), gated_silu(gate_up))
    assert len(calls) == 1 and ops.compiled is False
