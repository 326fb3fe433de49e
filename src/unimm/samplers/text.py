"""Next-token selection from logits: greedy, temperature, top-k and top-p (nucleus)."""

import torch


def select_next(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits: [B, V] -> token ids [B]. ``temperature == 0`` is greedy (argmax)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return draw(logits.softmax(-1), generator)


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One category per row of ``probs [..., K]`` -> ids ``[...]``.

    Callers seed CPU generators, also for a model on CUDA, whose ``multinomial`` refuses a CPU generator. Then
    only one uniform per row is drawn on the generator's device and the category found on the probabilities'
    device by inverse CDF (``searchsorted`` of the cumulative sum): copying every row's K probabilities to the
    CPU and sampling there each step is what made the masked samplers slow on a GPU. On one device it is
    ``torch.multinomial`` as before, so the CPU's seeded samples do not change."""
    flat = probs.reshape(-1, probs.shape[-1])
    if generator is None or generator.device == probs.device:
        return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
    return inverse_cdf(flat, torch.rand(flat.shape[0], 1, generator=generator).to(probs.device)).view(probs.shape[:-1])


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Rows ``probs [R, K]`` (need not sum to 1), uniforms ``u [R, 1]`` in [0, 1) -> the category each u is in, [R]."""
    cdf = probs.float().cumsum(-1)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_max(probs.shape[-1] - 1).squeeze(-1)
