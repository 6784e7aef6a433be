"""The first launch of each PyTorch kernel a model process meets first, made ahead on tiny tensors.

In a new CUDA context a kernel's first launch loads it (its module of PyTorch's library, CUDA loads
them lazily): 10-60 ms each on an H200 for those of a text prompt's eager parts (the embedding, the
rotary angles, the norm), where the launch that follows takes microseconds (bench/new_process_profile.py,
docs/BENCHMARKS.md). A handover's new process met them one after another in its warm-up generation,
after its weights were mapped; here a thread of their own launches them as soon as the context
exists, while the weights are mapped and the model is filled. Sampling's are among them: the warm-up
is greedy, and a client's first sampled answer would meet them otherwise.

A kernel chosen by shape (cuBLAS's products) is not made ahead: a tiny product would load another.
Attention's is chosen by the head's size and the mask, given here as the model's.
"""

import json
import logging
from pathlib import Path

log = logging.getLogger("inference.first_launches")


def attention_shapes(model_path: str) -> list[tuple[int, int, int]]:
    """(heads, key/value heads, head size) of the text and the vision attention, from the checkpoint's
    config.json; [] where it does not say."""
    try:
        config = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return []
    shapes = []
    parts = (("text_config", "num_attention_heads", "num_key_value_heads"), ("vision_config", "num_heads", "num_heads"))
    for part, heads_key, kv_key in parts:
        section = config.get(part) if isinstance(config.get(part), dict) else {}
        heads, kv_heads, hidden = section.get(heads_key), section.get(kv_key), section.get("hidden_size")
        size = section.get("head_dim") or (hidden // heads if isinstance(hidden, int) and heads else None)
        if all(isinstance(n, int) and n > 0 for n in (heads, kv_heads, size)) and heads % kv_heads == 0:
            shapes.append((heads, kv_heads, size))
    return shapes


def launch(device: str, dtype, shapes: list[tuple[int, int, int]]) -> None:
    """Launch once the kernels listed above (nothing read back: the launches load them)."""
    import torch
    import torch.nn.functional as F

    try:
        with torch.inference_mode():
            ids = torch.arange(4, device=device)
            table = torch.ones((8, 64), dtype=dtype, device=device)
            x = F.embedding(ids, table)
            # The rotary angles as transformers computes them (M-RoPE's sections, pairs repeated).
            freqs = ids[None, :, None].expand(3, -1, -1).float() * torch.ones(8, device=device)
            angles = torch.cat([part[0] for part in (freqs.cos() * 1.0).split(4, dim=-1)], dim=-1)
            angles = torch.cat((angles.repeat_interleave(2, dim=-1).to(dtype), torch.ones_like(x[:, :48])), -1)
            x = F.rms_norm(x * angles, (64,), torch.ones(64, dtype=dtype, device=device), 1e-5)
            F.layer_norm(x, (64,), table[0], table[1], 1e-5)
            F.gelu(x), F.silu(x)
            logits = x.index_select(0, ids[:2]).float()
            logits.argmax(dim=-1)
            own = torch.Generator(device=device)  # the process's random state left as it was
            probs = torch.softmax(logits / 0.5, dim=-1)
            ordered, order = probs.sort(dim=-1, descending=True)
            ordered = ordered.masked_fill(ordered.cumsum(dim=-1) - ordered > 0.9, 0.0)
            torch.where(
                ids[:2] > 0, order.gather(-1, torch.multinomial(ordered, 1, generator=own)).squeeze(-1), ids[:2]
            )
            for heads, kv_heads, size in shapes:
                q = torch.ones((1, heads, 4, size), dtype=dtype, device=device)
                kv = torch.ones((1, kv_heads, 4, size), dtype=dtype, device=device)
                F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=heads != kv_heads)
                F.scaled_dot_product_attention(q, q, q)
    except Exception as exc:  # a head size attention refuses, another PyTorch: its first use loads it instead
        log.debug("first launches not all made ahead", extra={"fields": {"why": str(exc)[:200]}})
