"""The vision encoder's Triton kernels (inference/ops/vision_block.py) compute what the model's own
modules compute. On a CPU they run in Triton's interpreter (TRITON_INTERPRET=1, tests/env.py); on a
GPU (pytest -m gpu) compiled, in bfloat16 as served and in float32."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")
glm4v = pytest.importorskip("transformers.models.glm4v.modeling_glm4v")

from inference.ops import vision_block  # noqa: E402


def module_norm(width: int, eps: float, device, dtype):
    norm = glm4v.Glm4vRMSNorm(width, eps=eps).to(device=device, dtype=dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(width, device=device, dtype=dtype) + 0.5)
    return norm


@pytest.mark.parametrize("rows, width", [(1, 32), (5, 96), (7, 1536)])
def test_norm_and_add_norm_are_the_modules_rmsnorm(setup, rows, width):
    _, device, dtype, tolerance = setup
    torch.manual_seed(rows)
    norm = module_norm(width, 1e-5, device, dtype)
    hidden, delta = (torch.randn(rows, width, device=device, dtype=dtype) * 3 for _ in range(2))
    with torch.no_grad():
        torch.testing.assert_close(vision_block.norm(hidden, norm.weight, 1e-5), norm(hidden), **tolerance)
        total, normed = vision_block.add_norm(hidden, delta, norm.weight, 1e-5)
        assert torch.equal(total, hidden + delta)  # the residual add rounds as the module's does
        torch.testing.assert_close(normed, norm(hidden + delta), **tolerance)


@pytest.mark.parametrize("tokens, heads, head_dim", [(3, 2, 16), (9, 12, 128)])
def test_rotate_qk_is_apply_rotary_pos_emb_vision(setup, tokens, heads, head_dim):
    _, device, dtype, tolerance = setup
    torch.manual_seed(heads)
    qkv = torch.randn(tokens, 3 * heads * head_dim, device=device, dtype=dtype)
    angles = torch.rand(tokens, head_dim, device=device) * 6
    cos, sin = angles.cos(), angles.sin()
    q, k = vision_block.rotate_qk(qkv, cos, sin, heads)
    own_q, own_k, _ = qkv.reshape(tokens, 3, heads, head_dim).unbind(1)
    own_q, own_k = glm4v.apply_rotary_pos_emb_vision(own_q, own_k, cos, sin)
    torch.testing.assert_close(q, own_q, **tolerance)
    torch.testing.assert_close(k, own_k, **tolerance)
    assert not torch.equal(q, own_k)  # q and k went to their own tensors


def test_silu_mul(setup):
    _, device, dtype, tolerance = setup
    torch.manual_seed(2)
    gate, up = (torch.randn(5, 3000, device=device, dtype=dtype) * 4 for _ in range(2))
    torch.testing.assert_close(vision_block.silu_mul(gate, up), F.silu(gate) * up, **tolerance)


def test_shapes_the_kernels_cannot_take_are_refused(setup):
    _, device, dtype, _ = setup
    qkv = torch.zeros(4, 3 * 2 * 12, device=device, dtype=dtype)  # heads of 12: not a power of two
    with pytest.raises(ValueError, match="power of two"):
        vision_block.rotate_qk(qkv, torch.zeros(4, 12, device=device), torch.zeros(4, 12, device=device), 2)
    with pytest.raises(ValueError, match="one shape"):
        vision_block.silu_mul(torch.zeros(2, 3, device=device), torch.zeros(3, 2, device=device))
    with pytest.raises(ValueError, match="contiguous"):
        vision_block.norm(torch.zeros(4, 6, device=device).t(), torch.ones(4, device=device), 1e-6)
