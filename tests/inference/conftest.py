"""Fixtures of the Triton kernels' tests (test_kernels.py, test_vision_block.py)."""

import os

import pytest
import torch


@pytest.fixture(
    scope="module",
    params=[
        ("cpu", torch.float32),
        pytest.param(("cuda", torch.float32), marks=pytest.mark.gpu),
        pytest.param(("cuda", torch.bfloat16), marks=pytest.mark.gpu),
    ],
    ids=lambda p: f"{p[0]}-{str(p[1]).split('.')[-1]}",
)
def setup(request):
    """(inference.ops.kernels, device, dtype, tolerance): on a CPU in Triton's interpreter, on a GPU compiled."""
    device, dtype = request.param
    if device == "cuda" and not torch.cuda.is_available():
        pytest.fail("no GPU here: run the gpu tests on the GPU machine")
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.fail("Triton kernels run on a CPU only in its interpreter: TRITON_INTERPRET=1 (tests/env.py)")
    from inference.ops import kernels

    tolerance = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 3e-2}
    return kernels, device, dtype, tolerance
