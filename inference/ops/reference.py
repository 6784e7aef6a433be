"""The decoding step's elementwise work as plain PyTorch operations: the reference forms.

Unfused, each is several kernels: what the step runs on a CPU (STEP_KERNELS=eager), what the prompt's
prefill always runs, and what `torch.compile` turns into one or two kernels each with
STEP_KERNELS=compile. On a GPU the step runs inference/ops/kernels.py instead, Triton kernels that
compute the same (tests/inference/test_kernels.py).
"""

import logging

log = logging.getLogger("inference.ops")


def add_norm(hidden, delta, delta_norm: tuple, next_norm: tuple):
    """The residual add of a normed branch, and the next norm of the sum: (hidden, normed)."""
    import torch.nn.functional as F

    hidden = hidden + F.rms_norm(delta, delta.shape[-1:], *delta_norm)
    return hidden, F.rms_norm(hidden, hidden.shape[-1:], *next_norm)


def rotate_with_matrix(qk, cos, sin, turn):
    """GLM's rotary embedding, (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) on interleaved pairs,
    as one matrix product and a multiply-add: the fewest kernels when not compiled."""
    return qk * cos + (qk @ turn) * sin


def rotate_pairs(qk, cos, sin):
    """The same rotation written on the pairs, which a compiler turns into one kernel."""
    import torch

    even, odd = qk[..., 0::2], qk[..., 1::2]
    c, s = cos[..., 0::2], sin[..., 0::2]  # cos and sin repeat each value for both halves of a pair
    return torch.stack((even * c - odd * s, odd * c + even * s), dim=-1).flatten(-2)


def gated_silu(gate_up):
    import torch.nn.functional as F

    gate, up = gate_up.chunk(2, dim=-1)
    return up * F.silu(gate)


class Ops:
    """The step's elementwise operations: compiled where asked and possible, else eager."""

    def __init__(self, turn, activation, compiled: bool):
        import functools

        self.compiled = compiled
        self.activation = activation
        eager_rotate = functools.partial(rotate_with_matrix, turn=turn)
        eager_gated = gated_silu if activation is None else functools.partial(_gated, activation=activation)
        if not compiled:
            self.add_norm, self.rotate, self.gated = add_norm, eager_rotate, eager_gated
            return
        import torch

        def compile(fn):
            return torch.compile(fn, dynamic=True, fullgraph=True)

        self.add_norm = self._guarded(compile(add_norm), add_norm)
        self.rotate = self._guarded(compile(rotate_pairs), eager_rotate)
        self.gated = self._guarded(compile(gated_silu), eager_gated) if activation is None else eager_gated

    @staticmethod
    def linear(x, weight, bias=None):
        import torch.nn.functional as F

        return F.linear(x, weight, bias)

    @staticmethod
    def logits(x, weight, bias=None, rows=None):
        """The LM head's product as float32 (in the weights' dtype, then .float()), of x's `rows`
        (an index tensor on the device) where given."""
        import torch.nn.functional as F

        return F.linear(x if rows is None else x.index_select(0, rows), weight, bias).float()

    def gated_product(self, x, weight):
        """The gated activation of x's product with the MLP's gate/up weight."""
        return self.gated(self.linear(x, weight))

    def _guarded(self, compiled, eager):
        """The compiled form, falling back to the eager one for good if compiling fails (no Triton,
        an unsupported GPU): slower, never broken. Compiling happens in the warm-up, before any
        CUDA graph is recorded."""
        chosen = [compiled]

        def call(*args):
            try:
                return chosen[0](*args)
            except Exception:
                if chosen[0] is eager:
                    raise
                log.exception("compiling the decoding step's %s failed; it runs eagerly", eager)
                chosen[0] = eager
                self.compiled = False
                return eager(*args)

        return call


def _gated(gate_up, activation):
    gate, up = gate_up.chunk(2, dim=-1)
    return up * activation(gate)
