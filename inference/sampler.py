"""Choosing each row's next token from its logits."""


def sample(logits, temperature: list[float], top_p: list[float]):
    """Next token per row: greedy where temperature is 0, else nucleus sampling."""
    import torch

    greedy = logits.argmax(dim=-1)
    if not any(t > 0 for t in temperature):
        return greedy
    temp = torch.tensor(temperature, device=logits.device).clamp(min=1e-5)[:, None]
    probs = torch.softmax(logits / temp, dim=-1)
    ordered, order = probs.sort(dim=-1, descending=True)
    outside = ordered.cumsum(dim=-1) - ordered > torch.tensor(top_p, device=logits.device)[:, None]
    ordered = ordered.masked_fill(outside, 0.0)
    sampled = order.gather(-1, torch.multinomial(ordered, 1)).squeeze(-1)
    sampling = torch.tensor([t > 0 for t in temperature], device=logits.device)
    return torch.where(sampling, sampled, greedy)
