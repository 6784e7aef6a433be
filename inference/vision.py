"""An image prompt's vision encoder, prepared once per image grid and, on a GPU, replayed as a graph.

The model's own encoder (transformers' GLM-4V vision model) computes on every call what depends
only on the images' grids (each patch's rotary angles and its interpolated position embedding), and
without flash-attention it reads the images' lengths back from the device to split attention per
image: a host sync, which a CUDA graph capture cannot hold. Here its modules run in the same order
on the same tensors, with that part done once per grid and the lengths kept on the host, so a grid's
pass can be recorded as a CUDA graph and replayed. Eagerly, the kernels of its 24 blocks were
launched from Python one by one, and the host's time doing so was most of an image prompt's first
token (52 ms against 18 replayed, docs/BENCHMARKS.md). A grid's graph is recorded like a prompt
shape's: when the decoder is idle, or between steps once its eager passes have cost as much as
recording it (ModelRunner).
"""

import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("inference.vision")

# Graphs of this many grids at most, of up to this many patches each: a larger image keeps the device
# busy anyway. Each keeps its pixels, features and preparation (about 31 MiB at 4,096 patches for
# GLM-4.6V-Flash's encoder: 0.5 GiB for 16; its activations share the runner's pool).
VISION_GRAPHS, VISION_GRAPH_PATCHES = 16, 4096
# Preparations kept for grids of that size, this many patches in all, the least recently used dropped
# first (about 4 KiB a patch for GLM-4.6V's encoder: 64 MiB); a graph keeps its own.
PREPARED_PATCHES = 16384
RECORD_GUESS = 0.1  # seconds a recording is taken to cost until one has been timed
# Images of prompts prefilled together whose grids have no graph run as one eager pass, of up to this
# many patches (a larger image runs alone, as before): the host launches the encoder's kernels once for
# all of them instead of once per prompt. On a GPU twice the largest graphed grid: a pass's activations
# stay far below one image's at the image processor's largest (GLM-4.6V's: 11.76 M pixels, 60,000
# patches), which a single request may send. On a CPU the work itself outweighs the launches but for
# small images: 8 prompts' images in one pass took 0.43x the time of one pass each at 396 patches in
# all, 0.59x at 960, 1.14x at 5,952 (the smoke model, bench/vision_together_bench.py).
TOGETHER_PATCHES = 2 * VISION_GRAPH_PATCHES
TOGETHER_PATCHES_CPU = 1024
# Grids waiting for a recording at most: images of ever new sizes keep only those that cost the most.
WANTED = 64


def _fusable(visual) -> bool:
    """Whether inference/ops/vision_block.py computes what these modules compute: a patch embedding
    that is a product, RMSNorms, SiLU gates, SDPA attention over images split on the host."""
    config = visual.config
    for conv in (visual.patch_embed.proj, visual.downsample):
        if tuple(conv.kernel_size) != tuple(conv.stride) or any(conv.padding) or conv.groups != 1:
            return False  # a convolution is a product only when its kernel covers each patch exactly
    norms = [visual.post_conv_layernorm, visual.post_layernorm]
    norms += [norm for block in visual.blocks for norm in (block.norm1, block.norm2)]
    return (
        getattr(config, "hidden_act", None) == "silu"
        and getattr(config, "_attn_implementation", None) == "sdpa"
        and all(hasattr(norm, "variance_epsilon") for norm in norms)
        and all(hasattr(block.attn, "scaling") for block in visual.blocks)
    )


def _rotary_angles(rotary, positions, inv_freq, device) -> tuple:
    """Glm4vVisionRotaryEmbedding's (cos, sin) of each patch at `positions` (h, w): those of each
    coordinate computed on the host (a few hundred at most, where the patches are up to 60,000), then
    picked per patch on the device and laid out as the module lays them out."""
    import torch

    freqs = torch.arange(int(positions.max()) + 1, dtype=torch.float32)[:, None] * inv_freq
    at = positions.flatten().to(device)
    return tuple(
        rotary.recomposition_frequencies(
            (f * rotary.attention_scaling).to(device).index_select(0, at).view(*positions.shape, -1)
        )
        for f in (freqs.cos(), freqs.sin())
    )


def _position_embedding(embeddings, grid, lengths, positions, device):
    """Glm4vVisionEmbeddings' forward given zero embeddings: each patch's position embedding, the
    table interpolated at the patch's place in its image, its sampling grid computed on the host in
    the same float32 steps. On a GPU those steps were a dozen small kernels of as many kinds, each
    loaded at its first launch in a new process, as at a handover's warm-up (docs/BENCHMARKS.md)."""
    import torch
    import torch.nn.functional as F

    table = embeddings.position_embedding.weight
    side = int(table.shape[0] ** 0.5)
    shapes = grid.repeat_interleave(lengths, dim=0).to(torch.float32)  # each patch's image's (t, h, w)
    across = ((positions[:, 1] + 0.5) / shapes[:, 2]) * 2 - 1
    down = ((positions[:, 0] + 0.5) / shapes[:, 1]) * 2 - 1
    where = torch.stack((across, down), dim=-1)[None, :, None].to(device)
    square = table.view(side, side, -1).permute(2, 0, 1)[None].float()
    sampled = F.grid_sample(
        square, where, mode=embeddings.interpolated_method, align_corners=False, padding_mode="border"
    )
    embedded = torch.empty((positions.shape[0], table.shape[1]), dtype=table.dtype, device=device)
    return embedded.copy_(sampled[0, :, :, 0].T)  # contiguous, as the blocks' kernels take it


def _weight_eps(norm) -> tuple:
    return norm.weight, norm.variance_epsilon


class ImageGrids(tuple):
    """A prompt's images as (t, h, w) patch grids, in order: the key of their preparation and graph."""

    @classmethod
    def of(cls, grid) -> "ImageGrids":
        """From the processor's image_grid_thw (read back from the device where it is there)."""
        return cls(tuple(int(n) for n in row) for row in grid.tolist())

    @property
    def patches(self) -> int:
        return sum(t * h * w for t, h, w in self)


@dataclass
class Prepared:
    """What a grid's pass needs besides its pixels."""

    patches: int
    cu_seqlens: object  # image boundaries; on the host unless flash-attention reads them
    max_seqlen: int
    angles: tuple  # rotary (cos, sin) per patch
    positions: object  # the interpolated position embedding per patch

    @classmethod
    def joined(cls, parts: list["Prepared"]) -> "Prepared":
        """The preparation of the parts' images one after another: what each patch needs depends on its
        own image only, so it is theirs put end to end, the boundaries shifted."""
        import torch

        bounds, patches = [parts[0].cu_seqlens], parts[0].patches
        for part in parts[1:]:
            bounds.append(part.cu_seqlens[1:] + patches)
            patches += part.patches
        longest = [part.max_seqlen for part in parts if part.max_seqlen is not None]
        return cls(
            patches=patches,
            cu_seqlens=torch.cat(bounds),
            max_seqlen=max(longest) if longest else None,
            angles=tuple(torch.cat(halves) for halves in zip(*(part.angles for part in parts), strict=True)),
            positions=torch.cat([part.positions for part in parts]),
        )


class VisionEncoder:
    def __init__(self, visual, capture: Callable | None, kernels=None, note=None):
        """`visual`: the model's vision encoder; `capture(run)` records `run` as a CUDA graph and returns
        (graph, its output) (ModelRunner._capture), None where nothing is graphed (a CPU); `kernels`:
        inference.ops.vision_block where its Triton kernels may run (a GPU), or None; `note`: a
        handover.CheckNote of the check at the first image, which an earlier model process under the
        same supervisor may have made already (the model's own encoder then need not run here)."""
        self.visual = visual
        self.capture = capture
        self.kernels = kernels if kernels is not None and _fusable(visual) else None
        self.note = note
        self.prepared: OrderedDict[ImageGrids, Prepared] = OrderedDict()
        self.inv_freq = None  # the rotary embedding's, on the host (_prepare)
        self.graphs: dict[ImageGrids, tuple] = {}  # grids -> (graph, pixels in, features out, Prepared)
        self.wanted: dict[ImageGrids, float] = {}  # grids run eagerly for want of a graph: host seconds
        self.record_cost = RECORD_GUESS
        self.replays = 0
        self.together = 0  # prompts whose images were encoded in a pass with another prompt's
        on_gpu = visual.post_conv_layernorm.weight.device.type == "cuda"
        self.most_together = TOGETHER_PATCHES if on_gpu else TOGETHER_PATCHES_CPU  # patches a pass
        self.joining = True  # until a pass of several prompts fails: then one prompt a pass, as before
        self.checked = note is not None and note.says(self.runs)

    @classmethod
    def of(cls, model, capture: Callable | None, kernels=None, note_for=None) -> "VisionEncoder | None":
        """The encoder for `model`, or None where its forward cannot take image features computed
        outside it (it then runs its own encoder, as before). `note_for(covers)`: the CheckNote of
        its check, given what describes the encoder."""
        inner = getattr(model, "model", None)
        visual = getattr(inner, "visual", None)
        if visual is None or "mm_encoder_outputs" not in inspect.signature(inner.forward).parameters:
            return None
        needed = ("patch_embed", "post_conv_layernorm", "rotary_pos_emb", "embeddings", "blocks", "merger")
        if not all(hasattr(visual, name) for name in needed):
            return None
        config = visual.config
        shapes = tuple(getattr(config, name, None) for name in ("hidden_size", "depth", "num_heads", "patch_size"))
        return cls(visual, capture, kernels, note_for(f"vision {shapes}") if note_for is not None else None)

    @property
    def runs(self) -> str | None:
        """What computes image features: "triton" or "modules" (this encoder), None (the model's own)."""
        return None if self.visual is None else "modules" if self.kernels is None else "triton"

    def inputs(self, inputs: dict, grids: ImageGrids | None = None) -> dict:
        """`inputs` with the images' features in place of their pixels, computed here; `inputs` as they
        are if this fails (logged; the model's own encoder then runs, now and from then on). Out of
        GPU memory, the request fails as it would in the model's own encoder."""
        import torch

        pixels, grid = inputs.get("pixel_values"), inputs.get("image_grid_thw")
        if pixels is None or grid is None or self.visual is None:
            return inputs
        try:
            features = self.features(pixels, grid, grids)
        except torch.OutOfMemoryError:
            raise
        except Exception:
            log.exception("the vision encoder failed here; %s", self._fall_back())
            return inputs
        if features is None:
            return inputs
        return _with_features(inputs, features)

    def inputs_many(self, prompts: list[dict]) -> list[dict]:
        """Each prompt's `inputs` as `inputs` gives them, the images of those whose grids have no graph
        encoded together, in passes of up to `most_together` patches: eagerly, a pass costs the host
        the launch of every kernel of the encoder (its 24 blocks), whatever its images. A recorded
        grid replays its graph, and until the first image is checked each prompt runs alone."""
        grids_of: dict[int, ImageGrids] = {}  # read once per prompt, whether joined or alone
        if self.visual is not None and self.checked and self.joining:
            for index, inputs in enumerate(prompts):
                if inputs.get("pixel_values") is not None and inputs.get("image_grid_thw") is not None:
                    grids_of[index] = ImageGrids.of(inputs["image_grid_thw"])
        done, group, patches = {}, [], 0
        for index, grids in grids_of.items():
            if grids in self.graphs or grids.patches > self.most_together:
                continue
            if patches + grids.patches > self.most_together:
                done.update(self._together(group, prompts))
                group, patches = [], 0
            group.append((index, grids))
            patches += grids.patches
        done.update(self._together(group, prompts))
        return [done[i] if i in done else self.inputs(inputs, grids_of.get(i)) for i, inputs in enumerate(prompts)]

    def _together(self, group: list[tuple[int, ImageGrids]], prompts: list[dict]) -> dict[int, dict]:
        """{index: inputs with features} for the prompts of `group` ((index in `prompts`, grids) each),
        their images encoded in one pass; {} for fewer than two, or where it fails (logged: each then
        runs alone, as they do from then on). Out of GPU memory, the prompts fail together; the
        scheduler retries each alone."""
        import torch

        if len(group) < 2:
            return {}
        began = time.monotonic()
        try:
            pixels = torch.cat([prompts[index]["pixel_values"].to(self.visual.dtype) for index, _ in group])
            prepared = Prepared.joined([self._prepare(grids) for _, grids in group])
            features = self.encode(pixels, prepared)
        except torch.OutOfMemoryError:
            raise
        except Exception:
            log.exception("the images of several prompts could not be encoded together; each is encoded alone")
            self.joining = False
            return {}
        merged = self.visual.spatial_merge_size**2
        parts = torch.split(features, [grids.patches // merged for _, grids in group])
        spent = time.monotonic() - began
        for _, grids in group:  # the pass's host time, shared by patches, counts toward their graphs
            self._want(grids, spent * grids.patches / prepared.patches)
        self.together += len(group)
        return {index: _with_features(prompts[index], part) for (index, _), part in zip(group, parts, strict=True)}

    def _want(self, grids: ImageGrids, seconds: float) -> None:
        """Count an eager pass's host time toward recording the grid's graph (kept for the WANTED
        grids that cost the most)."""
        if self.capture is not None and grids not in self.graphs and self._graphable(grids):
            self.wanted[grids] = self.wanted.get(grids, 0.0) + seconds
            if len(self.wanted) > WANTED:
                del self.wanted[min(self.wanted, key=self.wanted.__getitem__)]

    def features(self, pixels, grid, grids: ImageGrids | None = None):
        """The merged image features (tokens x the text's hidden size) of `pixels` on `grid` (`grids`,
        if read already); None if they disagree with the model's own encoder (checked at the first
        call: the warm-up's image)."""
        import torch

        grids = grids if grids is not None else ImageGrids.of(grid)
        pixels = pixels.to(self.visual.dtype)
        recorded = self.graphs.get(grids)
        if recorded is not None:
            graph, static, out, _ = recorded
            static.copy_(pixels)
            graph.replay()
            self.replays += 1
            return out.clone()  # the graph's output is overwritten by its next replay
        began = time.monotonic()
        features = self.encode(pixels, self._prepare(grids))
        self._want(grids, time.monotonic() - began)
        if not self.checked:
            own = self.visual(pixels, grid_thw=grid).pooler_output
            agreement = float(torch.nn.functional.cosine_similarity(features.float(), own.float()).min())
            if not agreement > 0.999:
                log.error(
                    "the vision encoder disagrees with the model's own (cosine %.4f); %s", agreement, self._fall_back()
                )
                return None
            self.checked = True
            if self.note is not None:
                self.note.note(self.runs)
        return features

    def _fall_back(self) -> str:
        """After a failure or a disagreement (this image gets the model's own encoder): the encoder's
        modules in place of its Triton kernels, checked again at the next image, while no graph holds
        the kernels; else the model's own encoder from now on (`inputs` leaves the pixels in place).
        Says which, for the log."""
        if self.kernels is not None and not self.graphs:
            self.kernels, self.checked = None, False
            return "its Triton kernels give way to its modules"
        self.visual, self.wanted = None, {}
        return "the model's own encoder runs from now on"

    def encode(self, pixels, prepared: Prepared):
        """The vision model's forward from its patches to its merged features, as transformers writes it
        (Glm4vVisionModel.forward), with the grid's preparation given."""
        visual = self.visual
        if self.kernels is not None:
            hidden = self._blocks_fused(self._product(visual.patch_embed.proj, pixels), prepared)
        else:
            hidden = visual.post_conv_layernorm(visual.patch_embed(pixels))
            hidden = hidden + prepared.positions  # what visual.embeddings adds
            for block in visual.blocks:
                hidden = block(
                    hidden,
                    cu_seqlens=prepared.cu_seqlens,
                    max_seqlen=prepared.max_seqlen,
                    position_embeddings=prepared.angles,
                )
            hidden = visual.post_layernorm(hidden)
        merge = visual.spatial_merge_size
        hidden = hidden.view(-1, merge, merge, hidden.shape[-1]).permute(0, 3, 1, 2)
        if self.kernels is None:
            return visual.merger(visual.downsample(hidden).view(-1, visual.config.out_hidden_size))
        hidden = self._product(visual.downsample, hidden)
        merger = visual.merger
        hidden = merger.act1(merger.post_projection_norm(merger.proj(hidden)))
        return self._mlp(merger, hidden)

    @staticmethod
    def _product(conv, patches):
        """`conv` over patches it covers whole (kernel = stride, no padding: _fusable), as a product:
        the patch embedding's Conv3d ran in cuDNN as a 0.24 ms non-tensor-core convolution on an H200
        (9 % of the pass), and without cuDNN a handover's new process does not pay its start at its
        warm-up (the merger's 2x2 downsample was the encoder's last convolution)."""
        import torch.nn.functional as F

        weight = conv.weight.view(conv.weight.shape[0], -1)
        return F.linear(patches.reshape(-1, weight.shape[1]), weight, conv.bias)

    def _blocks_fused(self, patches, prepared: Prepared):
        """post_conv_layernorm, the position embedding, the blocks and post_layernorm as `encode` runs
        them, each residual add with the norm after it one kernel (inference/ops/vision_block.py)."""
        kernels, visual = self.kernels, self.visual
        blocks = visual.blocks
        hidden = kernels.norm(patches, *_weight_eps(visual.post_conv_layernorm))
        hidden, normed = kernels.add_norm(hidden, prepared.positions, *_weight_eps(blocks[0].norm1))
        bounds = prepared.cu_seqlens.tolist()  # on the host: _fusable wants SDPA, not flash-attention
        for i, block in enumerate(blocks):
            hidden, normed = kernels.add_norm(
                hidden, self._attention(block.attn, normed, prepared.angles, bounds), *_weight_eps(block.norm2)
            )
            following = blocks[i + 1].norm1 if i + 1 < len(blocks) else visual.post_layernorm
            hidden, normed = kernels.add_norm(hidden, self._mlp(block.mlp, normed), *_weight_eps(following))
        return normed  # post_layernorm's

    def _attention(self, attention, normed, angles: tuple, bounds: list[int]):
        """Glm4vVisionAttention's forward (its SDPA form) with q and k rotated by one kernel, each image
        (patches bounds[i] .. bounds[i + 1]) attending to itself."""
        import torch
        import torch.nn.functional as F

        tokens, heads = normed.shape[0], attention.num_heads
        qkv = attention.qkv(normed)
        q, k = self.kernels.rotate_qk(qkv, *angles, heads)
        v = qkv.view(tokens, 3, heads, -1)[:, 2]
        outputs = [
            F.scaled_dot_product_attention(
                *(part[begin:end].transpose(0, 1)[None] for part in (q, k, v)), scale=attention.scaling
            )[0].transpose(0, 1)
            for begin, end in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        out = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
        return attention.proj(out.reshape(tokens, -1))

    def _mlp(self, mlp, hidden):
        """down(silu(gate(hidden)) * up(hidden)), the activation and product one kernel."""
        return mlp.down_proj(self.kernels.silu_mul(mlp.gate_proj(hidden), mlp.up_proj(hidden)))

    def _prepare(self, grids: ImageGrids) -> Prepared:
        """The grid's angles, position embeddings and image boundaries, as the vision model computes
        them on every call (kept for the grids used last, PREPARED_PATCHES in all)."""
        import torch
        from transformers.utils.generic import is_flash_attention_requested
        from transformers.vision_utils import get_vision_attention_seqlens, get_vision_position_ids

        prepared = self.prepared.get(grids)
        if prepared is not None:
            self.prepared.move_to_end(grids)
            return prepared
        visual = self.visual
        device = visual.post_conv_layernorm.weight.device
        # The positions and bounds (integers) on the host: on the GPU, transformers' functions launch a
        # kernel per step and wait for the GPU at each size they read, 0.1 s of a new process's first
        # image (docs/BENCHMARKS.md). The angles and the sampling grid too (_rotary_angles,
        # _position_embedding), then copied.
        grid = torch.tensor(grids, dtype=torch.long)
        positions = get_vision_position_ids(grid, visual.spatial_merge_size)
        cu_seqlens, max_seqlen = get_vision_attention_seqlens(grid, visual.config)
        if self.inv_freq is None:  # the model's own frequencies, read back once
            self.inv_freq = visual.rotary_pos_emb.inv_freq.to("cpu", torch.float32)
        angles = _rotary_angles(visual.rotary_pos_emb, positions, self.inv_freq, device)
        embedded = _position_embedding(visual.embeddings, grid, cu_seqlens[1:] - cu_seqlens[:-1], positions, device)
        if is_flash_attention_requested(visual.config):
            cu_seqlens = cu_seqlens.to(device)
        # else the images' bounds stay on the host: each block splits by them without reading the GPU.
        patches = grids.patches
        prepared = Prepared(
            patches=patches,
            cu_seqlens=cu_seqlens,
            max_seqlen=max_seqlen,
            angles=angles,
            positions=embedded,
        )
        if patches <= VISION_GRAPH_PATCHES:
            self.prepared[grids] = prepared
            while sum(each.patches for each in self.prepared.values()) > PREPARED_PATCHES:
                self.prepared.popitem(last=False)
        return prepared

    def _graphable(self, grids: ImageGrids) -> bool:
        return len(self.graphs) < VISION_GRAPHS and grids.patches <= VISION_GRAPH_PATCHES

    def due(self) -> list[ImageGrids]:
        """The wanted grids whose eager passes have cost as much host time as recording their graph."""
        return [grids for grids, spent in self.wanted.items() if spent >= self.record_cost]

    def record(self, grids: ImageGrids) -> None:
        """Record `grids`' pass as a CUDA graph (its input pixels a tensor of its own)."""
        import torch

        self.wanted.pop(grids, None)
        if self.capture is None or self.visual is None or grids in self.graphs or not self._graphable(grids):
            return
        began = time.monotonic()
        prepared = self._prepare(grids)
        patch = self.visual.patch_embed
        width = patch.in_channels * patch.temporal_patch_size * patch.patch_size**2
        device = self.visual.post_conv_layernorm.weight.device
        pixels = torch.zeros((prepared.patches, width), dtype=self.visual.dtype, device=device)
        try:
            with torch.no_grad():  # also when recorded outside the decoder's thread (the warm-up's)
                graph, out = self.capture(lambda: self.encode(pixels, prepared))
        except Exception:
            log.exception("an image grid's graph could not be recorded; images run eagerly")
            self.capture, self.wanted = None, {}
            return
        self.graphs[grids] = (graph, pixels, out, prepared)  # the graph reads the preparation's tensors
        self.record_cost = time.monotonic() - began


def _with_features(inputs: dict, features) -> dict:
    """`inputs` with the images' features in place of their pixels, as the model's forward takes them."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    rest = {key: value for key, value in inputs.items() if key != "pixel_values"}
    return {**rest, "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=(features,))}}
