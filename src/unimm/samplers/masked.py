"""Masked-token sampling (MaskGIT, Chang et al. 2022): iterative parallel decoding over a model callable.

All positions start as ``mask_id``. At step ``s`` of ``S`` the model predicts every position, a
token is drawn for each still-masked one, and the least confident of the new tokens are masked
again so that a fraction ``gamma((s + 1) / S)`` stays masked; ``gamma(r) = cos(pi r / 2)`` is
MaskGIT's cosine schedule (the same one training draws mask ratios from). Confidence is the
drawn token's probability, plus Gumbel noise scaled by ``choice_temperature * (1 - (s + 1) / S)``
(MaskGIT's annealed randomness). With ``temperature = 0`` and ``choice_temperature = 0`` the
loop is deterministic.
"""

import math
from collections.abc import Callable

import torch

from unimm.samplers.text import draw


def cosine_mask_ratio(r: torch.Tensor | float) -> torch.Tensor:
    """gamma(r) = cos(pi r / 2): the share of tokens masked at progress r in [0, 1]."""
    return torch.cos(torch.as_tensor(r, dtype=torch.float32) * math.pi / 2)


def masked_count(ratio: torch.Tensor, length: int) -> torch.Tensor:
    """How many of ``length`` positions a mask ratio [n] masks: ceil(ratio * length), at least one."""
    return (ratio * length).ceil().clamp(1, length)


def ratio_mask(ratio: torch.Tensor, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Masks [n, length] bool: row i masks ``masked_count(ratio[i])`` positions drawn uniformly at random."""
    rank = torch.rand(ratio.shape[0], length, generator=generator).argsort(-1).argsort(-1)
    return rank < masked_count(ratio, length)[:, None]


def sample_mask(n: int, length: int, generator: torch.Generator | None = None, min_ratio: float = 0.0) -> torch.Tensor:
    """Training masks [n, length] bool: a ratio gamma(u), u ~ U(0, 1), per row; at least one masked."""
    ratio = cosine_mask_ratio(torch.rand(n, generator=generator)).clamp_min(min_ratio)
    return ratio_mask(ratio, length, generator)


def _gumbel(shape: torch.Size, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(shape, generator=generator).clamp(1e-9, 1 - 1e-9)
    return -torch.log(-torch.log(u))


def maskgit_sample(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    batch: int,
    length: int,
    mask_id: int,
    steps: int,
    temperature: float = 1.0,
    choice_temperature: float = 4.5,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``logits_fn(tokens [B, N]) -> logits [B, N, K]`` (K excludes ``mask_id``) -> tokens [B, N]."""
    tokens = torch.full((batch, length), mask_id, dtype=torch.long, device=device)
    steps = max(1, min(steps, length))
    for s in range(steps):
        unknown = tokens == mask_id
        logits = logits_fn(tokens).float()
        if temperature > 0:
            probs = (logits / temperature).softmax(-1)
            drawn = draw(probs, generator)
        else:
            probs = logits.softmax(-1)
            drawn = probs.argmax(-1)
        conf = probs.gather(-1, drawn[..., None]).squeeze(-1).log()
        anneal = choice_temperature * (1 - (s + 1) / steps)
        if anneal > 0:
            conf = conf + anneal * _gumbel(conf.shape, generator).to(device)
        conf = conf.masked_fill(~unknown, float("inf"))  # tokens fixed earlier stay fixed
        tokens = torch.where(unknown, drawn, tokens)
        still = int(unknown[0].sum())
        keep_masked = min(int(math.floor(float(cosine_mask_ratio((s + 1) / steps)) * length)), still - 1)
        if s + 1 < steps and keep_masked > 0:
            lowest = conf.argsort(-1)[:, :keep_masked]
            tokens = tokens.scatter(1, lowest, mask_id)
    return tokens
