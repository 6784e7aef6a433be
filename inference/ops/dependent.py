"""Programmatic dependent launch (Hopper and later) for the decoding step's kernels.

At one row the step is 322 short kernels (an H200's profile, bench/step_profile.py), each waiting on
memory at its start and running its last blocks alone at its end. Launched dependent, a kernel
starts while the one before it finishes: it loads what does not depend on that kernel (a product's
first tile of weights, a norm's weights), then waits for it (`gdc_wait`: the kernel before has ended
and its writes are visible) before it reads anything the step computed or writes anything at all. A
kernel lets the next one in (`gdc_launch_dependents`) once its main work is done. Let in at each
kernel's start instead, the step was slower than without dependent launch (measured on an H100,
docs/BENCHMARKS.md), presumably as the waiting blocks of the next kernel took SMs that the running
kernel's later blocks needed.

STEP_PDL: `auto` (the default) launches dependent on a GPU of compute capability 9 or more; `off`
never does.
"""

import functools
import os

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from inference.model_runner import step_pdl

# What a launch passes (unpacked into its arguments, never changed)
_DEPENDENT = {"PDL": True, "launch_pdl": True}
_PLAIN = {"PDL": False}


def options(tensor) -> dict:
    """A step kernel's launch options on `tensor`'s device: its constexpr PDL and, where it is
    launched dependent, launch_pdl."""
    return _DEPENDENT if _capable(tensor.device.type, tensor.device.index) else _PLAIN


@functools.cache
def _capable(kind: str, index: int | None) -> bool:
    # once per device: a launch costs no more than a dictionary (the step's eager form, unrecorded
    # shapes, launches every kernel from Python)
    if step_pdl() == "off" or kind != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    import torch

    return torch.cuda.get_device_capability(index)[0] >= 9


@triton.jit
def wait(PDL: tl.constexpr):
    # Waits for the kernel before to have ended, its writes visible: before reading what it computed
    # or writing anything.
    if PDL:
        gdc_wait()


@triton.jit
def release(PDL: tl.constexpr):
    # Lets the next kernel in, after this kernel's main work.
    if PDL:
        gdc_launch_dependents()
