"""The model runner: the slot KV cache, the decoding step over all slots, and prefill.

Each request owns a slot of a preallocated KV cache (slots x context tokens per layer). Its prompt
goes through the model's own vision encoder and M-RoPE position code, then through the text layers
here, which write its keys and values straight into the slot; from then on it joins the shared
decoding step (scheduler.py decides who runs).

The decoding step is our own code over the model's text layers: plain tensor operations of fixed
shapes, with each row's write position and attention span given as tensors. On a GPU it is recorded
once per (batch, context) bucket as a CUDA graph and replayed, which removes the per-token Python and
kernel-launch overhead that bounds `generate` (docs/BENCHMARKS.md). After the prompt every position
is text, where the three M-RoPE sections carry the same position, so the step uses plain rotary
embeddings with the request's offset (rope delta).
"""

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from inference.ops.reference import Ops
from inference.vision import ImageGrids, VisionEncoder

log = logging.getLogger("inference.model_runner")


def buckets(limit: int, first: int) -> list[int]:
    """first, 2*first, 4*first ... and limit itself: graph shapes to record."""
    sizes, size = [], first
    while size < limit:
        sizes.append(size)
        size *= 2
    return [*sizes, limit]


def fit(sizes: list[int], need: int) -> int:
    return next(size for size in sizes if size >= need)


@dataclass
class Layer:
    """One decoder layer's tensors as the step uses them: q, k and v projections fused into one."""

    norm_in: tuple
    qkv_weight: object
    qkv_bias: object
    out_weight: object
    norm_after_attention: tuple
    norm_mlp_in: tuple
    gate_up_weight: object
    down_weight: object
    activation: Callable
    norm_after_mlp: tuple


def _norm(module) -> tuple:
    return module.weight, module.variance_epsilon


def fuse_layer(layer) -> Layer:
    """Concatenate the q/k/v weights into one matrix and point the model's own projections at views
    of it, so the model (which prefill still runs) and the step share the same memory."""
    import torch

    attention = layer.self_attn
    projections = (attention.q_proj, attention.k_proj, attention.v_proj)
    with torch.no_grad():
        weight = _side_by_side([p.weight for p in projections])
        if weight is None:
            weight = torch.cat([p.weight for p in projections])
        biases = [p.bias for p in projections]
        bias = _side_by_side(biases) if all(b is not None for b in biases) else None
        if bias is None:
            bias = torch.cat(
                [
                    b if b is not None else torch.zeros_like(p.weight[:, 0])
                    for b, p in zip(biases, projections, strict=True)
                ]
            )
        start = 0
        for p in projections:
            rows = p.weight.shape[0]
            p.weight = torch.nn.Parameter(weight[start : start + rows], requires_grad=False)
            if p.bias is not None:
                p.bias = torch.nn.Parameter(bias[start : start + rows], requires_grad=False)
            start += rows
    return Layer(
        norm_in=_norm(layer.input_layernorm),
        qkv_weight=weight,
        qkv_bias=bias,
        out_weight=attention.o_proj.weight,
        norm_after_attention=_norm(layer.post_self_attn_layernorm),
        norm_mlp_in=_norm(layer.post_attention_layernorm),
        gate_up_weight=layer.mlp.gate_up_proj.weight,
        down_weight=layer.mlp.down_proj.weight,
        activation=layer.mlp.activation_fn,
        norm_after_mlp=_norm(layer.post_mlp_layernorm),
    )


def _side_by_side(parts: list):
    """The tensors as one, without a copy, when they already lie one after another in one storage (as
    the weight reader lays q, k and v out, inference/weights.py); else None."""
    import torch

    first = parts[0]
    storage = first.untyped_storage()
    at = first.data_ptr()
    for part in parts:
        if not part.is_contiguous() or part.untyped_storage().data_ptr() != storage.data_ptr() or part.data_ptr() != at:
            return None
        if part.dtype != first.dtype or part.shape[1:] != first.shape[1:]:
            return None
        at += part.numel() * part.element_size()
    rows = sum(part.shape[0] for part in parts)
    return torch.empty(0, dtype=first.dtype, device=first.device).set_(
        storage, first.storage_offset(), (rows, *first.shape[1:])
    )


STEP_KERNELS = ("auto", "triton", "compile", "eager")
# STEP_PDL: the Triton kernels launched dependent on a GPU that has it ("auto") or never ("off"),
# inference/ops/dependent.py
STEP_PDL = ("auto", "off")


def step_pdl() -> str:
    """STEP_PDL, checked: read by the kernels (inference/ops/dependent.py), checked by the Engine at
    start so that a wrong value stops the server there."""
    value = os.environ.get("STEP_PDL", "auto")
    if value not in STEP_PDL:
        raise ValueError(f"STEP_PDL must be one of {', '.join(STEP_PDL)}, not {value!r}")
    return value


# Prompts of up to PROMPT_GRAPH_LIMIT tokens run their text layers as a CUDA graph of the next
# power of two from PROMPT_GRAPH_FIRST, prompts admitted together as one graph of their count and
# their longest padded so, up to PROMPT_GRAPH_LIMIT rows in all: more keep the device busy anyway.
PROMPT_GRAPH_FIRST, PROMPT_GRAPH_LIMIT = 32, 512
# What recording a prompt shape's graph is taken to cost until one has been timed (seconds; about
# 0.1 s on an H200, docs/BENCHMARKS.md).
PROMPT_RECORD_GUESS = 0.1


class ModelRunner:
    """The slot KV cache and one decoding step over all slots, CUDA-graphed on a GPU.

    Written for few kernels per layer (in a graph, every small kernel still costs microseconds):
    fused q/k/v projection, and the rest by `kernels`:
    - "triton" (what "auto" means on a GPU): inference/ops/kernels.py, a residual add with its norms as
      one kernel, rotary with the KV store as one (at one row, part of the q/k/v product), attention
      split over the positions;
    - "eager" (what "auto" means on a CPU): `ops.reference.Ops` as PyTorch operations, q and k rotated
      together, keys and values written with one indexed store, one additive mask for all layers;
    - "compile": the eager operations compiled with torch.compile (seconds more at every start).
    Triton or compiled forms that fail here fall back to the eager ones, logged, never broken.
    """

    def __init__(self, model, slots: int, context: int, graphs: bool, kernels: str = "auto"):
        import torch

        if kernels not in STEP_KERNELS:
            raise ValueError(f"STEP_KERNELS must be one of {', '.join(STEP_KERNELS)}, not {kernels!r}")

        text = self._text = model.model.language_model
        self.model = model
        self.layers = [fuse_layer(layer) for layer in text.layers]
        self.embed = text.embed_tokens
        self.final_norm = _norm(text.norm)
        self.lm_head = model.lm_head
        attention = text.layers[0].self_attn
        self.heads = attention.config.num_attention_heads
        self.kv_heads = attention.config.num_key_value_heads
        self.head_dim = attention.head_dim
        self.group = self.heads // self.kv_heads
        self.hidden = text.config.hidden_size
        self.slots, self.context = slots, context
        self.device = self.embed.weight.device
        self.dtype = self.embed.weight.dtype
        rotary = text.rotary_emb
        self.inv_freq = rotary.inv_freq.detach().float().to(self.device)
        self.rotary_scale = float(getattr(rotary, "attention_scaling", 1.0))
        width = 2 * self.inv_freq.numel()
        # GLM rotates interleaved pairs (x0, x1) -> (-x1, x0) on the first `width` channels:
        # as a matrix, so that rotating q and k is x * cos + (x @ turn) * sin (pass-through
        # channels get cos 1, sin 0).
        # Made on the host and copied: on the GPU its indexed stores were a new process's first launch of
        # that kernel, 36 ms of its main thread on an H200 (docs/BENCHMARKS.md).
        turn = torch.zeros((self.head_dim, self.head_dim), dtype=self.dtype)
        pairs = torch.arange(0, width, 2)
        turn[pairs + 1, pairs] = -1
        turn[pairs, pairs + 1] = 1
        turn = turn.to(self.device)
        self.pass_through = self.head_dim - width
        silu = getattr(text.config, "hidden_act", "") == "silu"
        cuda = self.device.type == "cuda"
        self.eager_ops = Ops(turn, None if silu else self.layers[0].activation, compiled=False)
        self.ops = (
            Ops(turn, self.eager_ops.activation, compiled=True) if kernels == "compile" and cuda else self.eager_ops
        )
        # Per layer: [slots, 2 (key, value), kv heads, context, head dim].
        shape = (slots, 2, self.kv_heads, context, self.head_dim)
        self.cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        # Inputs of the step, rows = slots: token id, write index, rotary position.
        self.state = torch.zeros((3, slots), dtype=torch.long, device=self.device)
        self.rows = torch.arange(slots, device=self.device)
        self.span = torch.arange(context, device=self.device)
        self.slot_sizes = buckets(slots, 1)
        # Few context buckets: attending to masked positions costs far less than another graph.
        self.context_sizes = sorted({min(size, context) for size in (1024, 4096, context)})
        self.use_graphs = graphs and self.device.type == "cuda"
        self.graphs: dict = {}
        # Prompts' text layers, graphed by padded count and length (PROMPT_GRAPH_FIRST ..
        # PROMPT_GRAPH_LIMIT tokens; the warm-up's and those first used later, recorded once the
        # decoder is idle): eager, a prompt's ~1,800 kernels are launched from Python one by one, and
        # the host's time doing so was its whole first token (docs/BENCHMARKS.md).
        sizes = buckets(PROMPT_GRAPH_LIMIT, PROMPT_GRAPH_FIRST) if self.use_graphs else []
        self.prompt_sizes = [size for size in sizes if size <= context]
        self.prompt_graphs: dict = {}
        self.prompt_inputs: tuple = ()  # _prompt_inputs
        # Shapes prompts ran eagerly for want of, in order, with the host's time in those eager passes.
        self.prompt_wanted: dict[tuple[int, int], float] = {}
        self.prompt_record_cost = PROMPT_RECORD_GUESS  # seconds the last prompt graph took to record
        self.prompt_replays = 0
        self.record_at_once = False  # a prompt shape without its graph recorded as it comes (the warm-up's)
        self.pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self.record_seconds = 0.0
        self.triton = None  # inference.ops.kernels where its kernels run here
        if kernels == "triton" or (kernels == "auto" and cuda):
            self.triton = self._triton_kernels()
            if self.triton is not None:
                self.ops = self.triton.Ops(self.eager_ops)
        # Image prompts' vision encoder, prepared once per grid and graphed like prompt shapes, its
        # small work in Triton kernels too where the step's run (checked at its first image).
        from inference.handover import VISION_CHECKED_SUFFIX

        fused = None
        if self.triton is not None:
            from inference.ops import vision_block as fused
        note = partial(self.check_note, VISION_CHECKED_SUFFIX)
        self.vision = VisionEncoder.of(model, self._capture if self.use_graphs else None, fused, note)

    @property
    def kernels(self) -> str:
        """What the step runs now: "triton", "compile" or "eager"."""
        return "triton" if self.triton is not None else "compile" if self.ops.compiled else "eager"

    @property
    def dependent_launch(self) -> bool:
        """Whether the step's Triton kernels are launched dependent (inference/ops/dependent.py)."""
        if self.triton is None:
            return False
        from inference.ops import dependent

        return dependent.options(self.state)["PDL"]

    def _triton_kernels(self):
        """inference.ops.kernels if its kernels run here and one step with them gives the eager step's
        logits; else None, logged. Also compiles them (from Triton's on-disk cache after the first
        start), so no request pays for it."""
        import torch

        if self.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            log.warning("Triton kernels need a GPU (or TRITON_INTERPRET=1); the decoding step runs eagerly")
            return None
        from inference.handover import KERNELS_CHECKED_SUFFIX

        began = time.monotonic()
        checked = self.check_note(KERNELS_CHECKED_SUFFIX)
        try:
            from inference.ops import kernels

            imported = time.monotonic()
            if checked.says():
                # An earlier model process under this supervisor checked these kernels on this
                # device and these shapes: a handover's new process skips the 0.9 s (on an H200) of
                # a first eager and a first Triton step; its warm-up loads the kernels instead.
                log.info("Triton decoding kernels", extra={"fields": {"checked": "by an earlier process"}})
                return kernels
            self.state[:, :1] = torch.tensor([[0], [0], [0]])
            length = self.context_sizes[0]
            with torch.inference_mode():
                eager = self.forward(1, length)
                self.triton, self.ops = kernels, kernels.Ops(self.eager_ops)
                fast = self.forward(1, length)
                agreement = float(torch.nn.functional.cosine_similarity(eager, fast).min())
        except Exception:
            log.exception("the decoding step's Triton kernels failed here; it runs the eager operations")
            return None
        finally:
            self.triton, self.ops = None, self.eager_ops
            with torch.inference_mode():
                for cache in self.cache:
                    cache[0].zero_()
        if not agreement > 0.99:
            log.error("the Triton decoding step disagrees with the eager one (cosine %.4f); eager it is", agreement)
            return None
        timing = {"import_s": round(imported - began, 3), "check_s": round(time.monotonic() - imported, 3)}
        log.info("Triton decoding kernels", extra={"fields": timing})
        checked.note()
        return kernels

    def check_note(self, suffix: str, covers: str = ""):
        """Where this supervisor notes a check of kernels a model process made (handover.CheckNote),
        covering torch, the device, the dtype and the text layers' shapes (and `covers`)."""
        import torch

        from inference.handover import CheckNote

        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "interpreter"
        shapes = (self.heads, self.kv_heads, self.head_dim, self.hidden, len(self.layers), self.context_sizes[0])
        text = f"torch {torch.__version__} on {device}, {self.dtype}, shapes {shapes}"
        return CheckNote(suffix, f"{text}, {covers}" if covers else text)

    def resize(self, slots: int) -> None:
        """Give the KV cache `slots` slots, between steps: the slots in use keep their keys and values
        (copied into the new cache), graphs are recorded again for the new tensors as they are needed. A
        handover's new process that started with fewer slots, so that it fit beside the old one, grows
        back here."""
        import torch

        keep = min(slots, self.slots)
        cache = []
        for old in self.cache:
            new = torch.zeros((slots, *old.shape[1:]), dtype=old.dtype, device=old.device)
            new[:keep].copy_(old[:keep])
            cache.append(new)
        self.cache = cache
        state = torch.zeros((3, slots), dtype=torch.long, device=self.device)
        state[:, :keep].copy_(self.state[:, :keep])
        self.state, self.rows = state, torch.arange(slots, device=self.device)
        self.slots, self.slot_sizes = slots, buckets(slots, 1)
        self.graphs.clear()  # they captured the old tensors
        # Their inputs stay (they hold no cache); their shapes are recorded again when the decoder is idle
        # or, under load, once due (graphs_due).
        self.prompt_wanted = {**dict.fromkeys(self.prompt_graphs, 0.0), **self.prompt_wanted}
        self.prompt_graphs.clear()
        if not self.use_graphs:
            return
        # A fresh pool: the old one may be released with the graphs that used it. The steps are recorded
        # again as they are needed, and the rest when the scheduler is idle.
        self.pool = torch.cuda.graph_pool_handle()

    @property
    def cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.cache)

    def _layers(self, hidden, attend, ops, x=None):
        """All text layers over `hidden` (tokens x hidden size; `x` its first norm, if already done);
        `attend(number, x)` takes the normed hidden states, projects them to q, k and v (`_qkv`),
        rotates q and k, stores the keys and values and returns the attended values (tokens x heads *
        head dim). Returns the final-normed hidden states."""
        import torch.nn.functional as F

        if x is None:
            x = F.rms_norm(hidden, (self.hidden,), *self.layers[0].norm_in)
        for number, layer in enumerate(self.layers):
            out = ops.linear(attend(number, x), layer.out_weight)
            hidden, x = ops.add_norm(hidden, out, layer.norm_after_attention, layer.norm_mlp_in)
            x = ops.linear(ops.gated_product(x, layer.gate_up_weight), layer.down_weight)
            following = self.layers[number + 1].norm_in if number + 1 < len(self.layers) else self.final_norm
            hidden, x = ops.add_norm(hidden, x, layer.norm_after_mlp, following)
        return x

    def _qkv(self, number: int, x, ops):
        """Layer `number`'s q, k and v of x: tokens x (heads + 2 kv heads) x head dim."""
        layer = self.layers[number]
        qkv = ops.linear(x, layer.qkv_weight, layer.qkv_bias)
        return qkv.view(x.shape[0], self.heads + 2 * self.kv_heads, self.head_dim)

    def _rotated(self, qkv, cos, sin, ops):
        """(q, k, v) of `qkv` with q and k rotated at the angles `cos`/`sin`."""
        qk = ops.rotate(qkv[:, : self.heads + self.kv_heads], cos, sin)
        return qk[:, : self.heads], qk[:, self.heads :], qkv[:, self.heads + self.kv_heads :]

    def _widen(self, cos, sin):
        """cos/sin over the rotated channels -> over the whole head (1 and 0 on pass-through channels)."""
        import torch

        ones = torch.ones((*cos.shape[:-1], self.pass_through), dtype=cos.dtype, device=cos.device)
        return torch.cat((cos, ones), dim=-1)[:, None], torch.cat((sin, ones * 0), dim=-1)[:, None]

    def forward(self, rows: int, length: int):
        """Logits (rows x vocab, float32) for the tokens in self.state, attending to `length` positions."""
        import torch
        import torch.nn.functional as F

        ids, index, position = self.state[0, :rows], self.state[1, :rows], self.state[2, :rows]
        if self.triton is not None:
            kernels = self.triton

            def attend(number, x):
                layer, cache = self.layers[number], self.cache[number]
                q = self.ops.qkv_rotate_store(
                    x,
                    layer.qkv_weight,
                    layer.qkv_bias,
                    cache,
                    index,
                    position,
                    self.inv_freq,
                    self.rotary_scale,
                    self.heads,
                    self.kv_heads,
                )
                return kernels.attend(q, cache, index, length)

            hidden, x = kernels.embed_norm(ids, self.embed.weight, self.layers[0].norm_in)
            hidden = self._layers(hidden, attend, self.ops, x)
            return self._logits(hidden)

        slot = self.rows[:rows]
        freqs = (position[:, None].float() * self.inv_freq[None]).repeat_interleave(2, dim=-1)
        cos, sin = self._widen(
            (freqs.cos() * self.rotary_scale).to(self.dtype), (freqs.sin() * self.rotary_scale).to(self.dtype)
        )
        visible = self.span[:length][None] <= index[:, None]
        mask = torch.zeros((rows, 1, 1, length), dtype=self.dtype, device=self.device)
        mask = mask.masked_fill(~visible[:, None, None, :], float("-inf"))

        def attend(number, x):
            q, k, v = self._rotated(self._qkv(number, x, self.ops), cos, sin, self.ops)
            cache = self.cache[number]
            cache[slot, :, :, index] = torch.stack((k, v), dim=1)  # rows, 2, kv heads, head dim
            # One query token per row: the query heads sharing a KV head become that head's
            # "query positions", which is exact GQA without repeating keys and values.
            return F.scaled_dot_product_attention(
                q.view(rows, self.kv_heads, self.group, self.head_dim),
                cache[:rows, 0, :, :length],
                cache[:rows, 1, :, :length],
                attn_mask=mask,
            ).reshape(rows, -1)

        return self._logits(self._layers(self.embed(ids), attend, self.ops))

    def run(self, rows: int, need_length: int):
        rows = fit(self.slot_sizes, rows)
        length = fit(self.context_sizes, need_length)
        if not self.record(rows, length):
            return self.forward(rows, length)
        graph, out = self.graphs[rows, length]
        graph.replay()
        return out

    def record(self, rows: int, length: int) -> bool:
        """The decoding step of `rows` rows over `length` positions recorded, unless it is; whether it has
        its graph. Its runs write keys and values at the state's positions: only while no request runs
        (the scheduler idle), or for the step about to run with that state (the same values). Steps of
        the first context bucket are recorded when the scheduler is idle (record_next_common), longer
        ones and those not recorded yet when a step first needs them (a one-off pause for the streams
        running then, docs/BENCHMARKS.md). A failed recording turns graphs off, since every later step
        would try again and fail: the runner runs eagerly from then on, and says so in its log."""
        if not self.use_graphs:
            return False
        if (rows, length) not in self.graphs:
            try:
                self.graphs[rows, length] = self._record(rows, length)
            except Exception:
                log.exception("a decoding step's graph could not be recorded; steps run without graphs")
                self.graphs.clear()
                self.use_graphs = False
                return False
        return True

    def record_next_common(self) -> bool:
        """Record one decoding step of the first context bucket not recorded yet; whether there was one."""
        missing = self.common_missing
        if missing:
            self.record(*missing[0])
        return bool(missing)

    @property
    def common_missing(self) -> list[tuple[int, int]]:
        """The decoding steps of the first context bucket not recorded yet (none without graphs)."""
        length = self.context_sizes[0]
        return (
            [(rows, length) for rows in self.slot_sizes if (rows, length) not in self.graphs] if self.use_graphs else []
        )

    def _record(self, rows: int, length: int):
        return self._capture(lambda: self.forward(rows, length))

    def _capture(self, run: Callable):
        """`run` recorded as a CUDA graph in the runner's pool: (graph, its output)."""
        import torch

        began = time.monotonic()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            run()  # library workspaces and lazy kernels initialise outside the capture (once is enough)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            out = run()
        self.record_seconds += time.monotonic() - began
        return graph, out

    def prefill(self, inputs: dict, slot: int):
        """Run the prompt, keep its keys/values in `slot`; returns (last logits, rope delta)."""
        return self.prefill_many([(inputs, slot)])[0]

    def prefill_many(self, prompts: list[tuple[dict, int]]) -> list[tuple]:
        """Run several prompts (inputs, slot) in one pass over the text layers, each keeping its
        keys/values in its slot; returns (last logits, rope delta) per prompt, in order.

        The model's own forward builds each prompt's input embeddings (vision encoder, image features
        in place of the placeholders) and M-RoPE positions; it is stopped as it calls the text
        layers, which run here instead, over the prompts' tokens side by side: every weight is read
        once for all of them (prompts one at a time cost a pass each: 16 requests arriving together
        waited for 16 prefills, docs/BENCHMARKS.md), and each prompt attends causally to itself only.
        """
        import torch

        segments, hiddens, angles, deltas, start = [], [], [], [], 0
        lengths = [inputs["input_ids"].shape[1] for inputs, _ in prompts]
        if max(lengths) >= self.context:
            raise ValueError(f"the prompt is {max(lengths)} tokens; a slot holds {self.context}")
        # An image prompt's offset computed on the host with its positions (with_positions), else read here.
        known = [inputs.get("rope_delta") for inputs, _ in prompts]
        given = [{k: v for k, v in inputs.items() if k != "rope_delta"} for inputs, _ in prompts]
        if self.vision is not None:  # the images' features, of prompts without a graph in passes together
            given = self.vision.inputs_many(given)
        for inputs, (_, slot), n, delta in zip(given, prompts, lengths, known, strict=True):
            embeds, positions = self._embed(inputs)
            if positions is None:  # text only: the same position on all three M-RoPE axes
                positions = torch.arange(n, device=self.device).view(1, 1, n).expand(3, 1, n)
                delta = 0  # its largest position is n - 1
            elif positions.shape[0] == 4:  # text positions first, as some versions pass them
                positions = positions[1:]
            cos, sin = self._text.rotary_emb(embeds, positions)
            angles.append(self._widen(cos[0], sin[0]))
            hiddens.append(embeds[0])
            # Read back from the GPU otherwise: a wait for the images' encoding before the prompt's layers
            # are launched (and, in a new process, its first reduction kernel loaded).
            deltas.append(delta if delta is not None else int(positions.max()) + 1 - n)
            segments.append((start, n, slot))
            start += n

        shape = self._prompt_shape([n for _, n, _ in segments])
        logits = self._prompt_replay(shape, hiddens, angles, [slot for *_, slot in segments]) if shape else None
        if logits is not None:
            return [(logits[i : i + 1], delta) for i, delta in enumerate(deltas)]
        began = time.monotonic()

        hidden = torch.cat(hiddens) if len(hiddens) > 1 else hiddens[0]
        cos = torch.cat([c for c, _ in angles]) if len(angles) > 1 else angles[0][0]
        sin = torch.cat([s for _, s in angles]) if len(angles) > 1 else angles[0][1]

        def attend(number, x):
            q, k, v = self._rotated(self._qkv(number, x, self.eager_ops), cos, sin, self.eager_ops)
            attended = []
            for begin, n, slot in segments:
                keys, values = k[begin : begin + n].transpose(0, 1), v[begin : begin + n].transpose(0, 1)
                self.cache[number][slot, 0, :, :n] = keys  # kv heads, tokens, head dim
                self.cache[number][slot, 1, :, :n] = values
                attended.append(self._causal(q[None, begin : begin + n], keys[None], values[None]))
            return torch.cat(attended) if len(attended) > 1 else attended[0]

        # Eager operations: a prompt's many tokens keep the kernels busy, and compiled forms for
        # every prompt length would cost more in guards and compiling than they save.
        x = self._layers(hidden, attend, self.eager_ops)
        last = [begin + n - 1 for begin, n, _ in segments]
        logits = self._logits(x[last[0] : last[0] + 1] if len(last) == 1 else x[last])  # a slice: no kernel
        if shape in self.prompt_wanted:
            # The host's time launching the eager pass, which is where its time goes (graphs_due).
            self.prompt_wanted[shape] += time.monotonic() - began
        return [(logits[i : i + 1], delta) for i, delta in enumerate(deltas)]

    def _causal(self, q, keys, values, grouped: bool = False):
        """Prompts' attention, each prompt's token to itself and those before it: q [prompts, tokens,
        heads, head dim] over their keys and values [prompts, kv heads, tokens, head dim]; returns
        [prompts x tokens, heads x head dim]. `grouped` (keys and values contiguous, as
        kernels.prompt_rotate_store writes them): each KV head read by its group of query heads where
        it lies, not copied for each (SDPA's enable_gqa). The eager forms' keys are strided views; with
        enable_gqa there, prompts prefilled together on a GPU in float32 no longer matched their lone
        prefills (tests/inference/test_batching.py), so they keep the copies."""
        import torch.nn.functional as F

        if not grouped:
            keys, values = keys.repeat_interleave(self.group, dim=1), values.repeat_interleave(self.group, dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, is_causal=True, enable_gqa=grouped)
        return out.transpose(1, 2).reshape(q.shape[0] * q.shape[1], -1)

    def _prompt_shape(self, lengths: list[int]) -> tuple[int, int] | None:
        """(prompts, length) of the graph that runs prompts of these `lengths` together: their count and
        their longest padded to recorded sizes, no more rows than the longest lone prompt; None: eagerly."""
        if not self.prompt_sizes or max(lengths) > self.prompt_sizes[-1]:
            return None
        size = fit(self.prompt_sizes, max(lengths))
        count = fit(buckets(self.prompt_sizes[-1] // self.prompt_sizes[0], 1), len(lengths))
        return (count, size) if count * size <= self.prompt_sizes[-1] else None

    def prompt_pass(self, count: int, size: int, hidden, cos, sin, at):
        """The text layers over `count` prompts of `size` rows each, side by side in `hidden` (rotary
        `cos`/`sin` alike): prompt i's keys and values into slot at[0, i] (positions 0 .. size - 1),
        the float32 logits of row at[1, i] (its last token) returned. Fixed shapes and the slots and
        last tokens as tensors, so it is recorded once per shape and replayed for any prompts: the
        rows after a prompt's own are padding, which its tokens never attend to (they come after
        them) and whose keys and values, past the prompt's end in its slot, the decoding step
        overwrites before it reads them (it writes a position, then attends up to it)."""
        import torch

        rows = count * size
        cos, sin = cos[:rows], sin[:rows]
        slots, last = at[0, :count], at[1, :count]

        def attend(number, x):
            qkv = self._qkv(number, x, self.eager_ops)
            if self.triton is not None:
                # Rotation, the keys and values for attention and their store into the slots as one
                # kernel where the eager forms launch about eight, and grouped attention without the
                # keys' copies: an image prompt's prefill (256 rows) 15.5 -> 13.0 ms on an H200.
                q, kv = self.triton.prompt_rotate_store(
                    qkv, cos, sin, self.cache[number], slots, size, self.heads, self.kv_heads
                )
                return self._causal(q.view(count, size, *q.shape[1:]), kv[:, 0], kv[:, 1], grouped=True)
            q, k, v = self._rotated(qkv, cos, sin, self.eager_ops)
            keys = k.view(count, size, *k.shape[1:]).transpose(1, 2)  # prompts, kv heads, tokens, head dim
            values = v.view(count, size, *v.shape[1:]).transpose(1, 2)
            self.cache[number][:, :, :, :size].index_copy_(0, slots, torch.stack((keys, values), dim=1))
            return self._causal(q.view(count, size, *q.shape[1:]), keys, values)

        # The adds with their norms and the gated activation as the step's Triton kernels where it has
        # them: one kernel each where the eager forms launch several (7.3 ms against 9.0-9.3 on an H200).
        ops = self.ops if self.triton is not None else self.eager_ops
        x = self._layers(hidden[:rows], attend, ops)
        return self._logits(x, last)

    def _logits(self, x, rows=None):
        """The LM head's float32 logits of x's rows (of its `rows` where given, an index tensor on the
        device), by the step's operations: the prompts' last rows too, so that with the Triton kernels
        one row is the step's own product, picked by it, and a new process's warm-up loads no other
        kernel for it (cuBLAS's product at that shape, then index_select's pick, were one more each)."""
        return self.ops.logits(x, self.lm_head.weight, self.lm_head.bias, rows)

    def _prompt_replay(self, shape: tuple[int, int], hiddens: list, angles: list, slots: list[int]):
        """prompt_pass for these prompts (hidden states, rotary (cos, sin) and slot each) at `shape`,
        as its graph (without graphs, run as it would be recorded); None when that graph is not
        recorded yet (the prompts then run eagerly and the shape is recorded when the decoder is idle,
        record_wanted). A group padded to more prompts than it has repeats its first prompt, whose
        copies write the same keys and values into the same slot."""
        import torch

        if self.use_graphs and shape not in self.prompt_graphs:
            self.prompt_wanted.setdefault(shape, 0.0)
            if not self.record_at_once:
                return None
            self.record_wanted(slots[0], [shape])  # this prompt's slot: its keys and values are written next
            if shape not in self.prompt_graphs:
                return None  # its recording failed: prompts run eagerly from now on
        inputs = self._prompt_inputs()
        count, size = shape
        for i, (hidden, (cos, sin)) in enumerate(zip(hiddens, angles, strict=True)):
            for target, value in zip(inputs[:3], (hidden, cos, sin), strict=True):
                target[i * size : i * size + value.shape[0]].copy_(value)
        for target in inputs[:3]:
            target[len(hiddens) * size : count * size].view(-1, size, *target.shape[1:]).copy_(target[None, :size])
        repeat = count - len(hiddens)
        lasts = [i * size + hidden.shape[0] - 1 for i, hidden in enumerate(hiddens)]
        inputs[3][:, :count].copy_(torch.tensor((slots + slots[:1] * repeat, lasts + lasts[:1] * repeat)))
        if not self.use_graphs:
            return self.prompt_pass(count, size, *inputs)
        graph, out = self.prompt_graphs[shape]
        graph.replay()
        self.prompt_replays += 1
        return out.clone()  # the graph's output is overwritten by its next replay

    def _prompt_inputs(self) -> tuple:
        """The prompt graphs' inputs: hidden states, rotary cos and sin, (slots, last rows)."""
        import torch

        if not self.prompt_inputs:
            most = self.prompt_sizes[-1]
            # Plain tensors even when first wanted on the decoder's thread, in inference mode (the warm-up's
            # prompt): the main thread writes them too, recording what the warm-up left wanted.
            with torch.inference_mode(False):
                self.prompt_inputs = (
                    torch.zeros((most, self.hidden), dtype=self.dtype, device=self.device),
                    torch.zeros((most, 1, self.head_dim), dtype=self.dtype, device=self.device),
                    torch.zeros((most, 1, self.head_dim), dtype=self.dtype, device=self.device),
                    torch.zeros((2, most), dtype=torch.long, device=self.device),
                )
        return self.prompt_inputs

    @property
    def graphs_wanted(self) -> bool:
        """Whether prompt shapes or image grids ran eagerly for want of a graph not recorded yet."""
        return bool(self.prompt_wanted) or bool(self.vision is not None and self.vision.wanted)

    def graphs_due(self) -> list:
        """The wanted prompt shapes and image grids whose eager passes have already cost as much time as
        recording their graph would: worth recording even while requests are decoding (their steps wait for the
        recording, once). A shape met once stays eager until the decoder is idle; one that keeps coming
        back is recorded after about a recording's worth of eager time (renting until the rent paid
        equals the price: at most twice the best choice made knowing the future)."""
        cost = self.prompt_record_cost
        due = [shape for shape, spent in self.prompt_wanted.items() if spent >= cost]
        return due + (self.vision.due() if self.vision is not None else [])

    def record_wanted(self, slot: int = 0, shapes: list | None = None) -> None:
        """Record the graphs of `shapes` (every prompt shape and image grid run eagerly for want of its
        graph when None). A prompt shape's warm-up runs write keys and values into `slot`, which must
        hold no request: any slot while none runs (the scheduler when idle), a free one between steps
        (graphs_due). About 0.1 s a shape when idle, 0.2-0.4 s between steps under load
        (docs/BENCHMARKS.md)."""
        if self.vision is not None:
            for grids in list(self.vision.wanted if shapes is None else shapes):
                if isinstance(grids, ImageGrids):
                    self.vision.record(grids)
            shapes = None if shapes is None else [shape for shape in shapes if not isinstance(shape, ImageGrids)]
        if not self.prompt_sizes:  # prompt graphs given up (a recording failed): nothing to record
            self.prompt_wanted = {}
            return
        inputs = self._prompt_inputs()
        inputs[3][0].fill_(slot)
        inputs[3][1].zero_()  # row 0: a valid index
        for shape in list(self.prompt_wanted if shapes is None else shapes):
            del self.prompt_wanted[shape]
            count, size = shape
            began = time.monotonic()
            try:
                self.prompt_graphs[shape] = self._capture(partial(self.prompt_pass, count, size, *inputs))
            except Exception:
                log.exception("a prompt's graph could not be recorded; prompts run eagerly")
                self.prompt_sizes, self.prompt_wanted = [], {}
                return
            self.prompt_record_cost = time.monotonic() - began

    def with_positions(self, inputs: dict) -> dict:
        """An image prompt's inputs (on the host) with its M-RoPE positions, computed there by the
        model's own get_rope_index (on the GPU, on the decoder's thread, its loop over the prompt's spans
        launches kernels and waits for the GPU at each `.tolist()` and `.item()`). The model's forward
        takes positions given as they are (`_embed`); where they cannot be computed here, it computes them
        itself and its error, if any, goes to the request as before."""
        if "image_grid_thw" not in inputs or "position_ids" in inputs:
            return inputs  # text only: positions 0 .. n - 1 on all three axes (prefill_many)
        try:
            positions, deltas = self.model.model.get_rope_index(
                inputs["input_ids"],
                inputs["mm_token_type_ids"],
                image_grid_thw=inputs["image_grid_thw"],
                attention_mask=inputs.get("attention_mask"),
            )
        except Exception:  # inputs the model's forward will refuse, with its own words
            return inputs
        # And the offset of the answer's positions (prefill_many), a number: not read back from the GPU.
        return {**inputs, "position_ids": positions, "rope_delta": int(deltas[0, 0])}

    def _embed(self, inputs: dict):
        """(inputs_embeds, position ids) exactly as the model would hand them to its text layers (the
        images' features computed already, where the vision encoder runs here)."""

        def capture(module, args, kwargs):
            raise _Captured(kwargs)

        self.model.model.rope_deltas = None  # else a text-only prompt inherits the last image prompt's offset
        handle = self._text.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            self.model.model(**inputs)
        except _Captured as captured:
            kwargs = captured.args[0]
            return kwargs["inputs_embeds"], kwargs.get("position_ids")
        finally:
            handle.remove()
        raise RuntimeError("the model did not call its text layers")


class _Captured(Exception):
    """Carries the text layers' inputs out of the model's forward (ModelRunner._embed)."""
