"""Choosing each row's next token from its logits."""

from dataclasses import dataclass


@dataclass
class Params:
    """The rows' sampling settings, on the logits' device: made once for a batch and used at every
    step of it, so that a step queued behind another copies nothing from the host (a copy from
    pageable host memory waits for the device)."""

    greedy: bool  # every row greedy: argmax only
    temperature: object = None  # [rows, 1], clamped above 0
    top_p: object = None  # [rows, 1]
    sampling: object = None  # [rows] bool: the rows that sample

    @classmethod
    def of(cls, temperature: list[float], top_p: list[float], device) -> "Params":
        import torch

        if not any(t > 0 for t in temperature):
            return cls(True)
        return cls(
            False,
            torch.tensor(temperature, device=device).clamp(min=1e-5)[:, None],
            torch.tensor(top_p, device=device)[:, None],
            torch.tensor([t > 0 for t in temperature], device=device),
        )


def sample(logits, params: Params):
    """Next token per row: greedy where temperature is 0, else nucleus sampling."""
    import torch

    greedy = logits.argmax(dim=-1)
    if params.greedy:
        return greedy
    probs = torch.softmax(logits / params.temperature, dim=-1)
    ordered, order = probs.sort(dim=-1, descending=True)
    outside = ordered.cumsum(dim=-1) - ordered > params.top_p
    ordered = ordered.masked_fill(outside, 0.0)
    sampled = order.gather(-1, torch.multinomial(ordered, 1)).squeeze(-1)
    return torch.where(params.sampling, sampled, greedy)
