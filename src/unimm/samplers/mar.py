"""Masked autoregressive generation order (MAR, Li et al. 2024): which positions are produced when.

An image of ``n`` positions is generated in ``S`` groups along an order (raster, or a random
permutation per image). After step ``s`` the share ``cos(pi/2 * (s+1)/S)`` of positions is still
unknown (MAR's cosine schedule; the same one training draws mask ratios from), so the groups grow
as generation proceeds. Training masks the positions that come *last* in the same order, so raster
order trains exactly the prefixes that raster sampling conditions on. No weights, no model imports.
"""

import math
from typing import Literal

import torch

from unimm.samplers.masked import cosine_mask_ratio, masked_count

Order = Literal["raster", "random"]


def generation_order(batch: int, n: int, order: Order, generator: torch.Generator | None = None) -> torch.Tensor:
    """[batch, n] long: row b lists image b's positions in the order they are generated."""
    if order == "raster":
        return torch.arange(n).expand(batch, n).clone()
    if order == "random":
        return torch.stack([torch.randperm(n, generator=generator) for _ in range(batch)])
    raise ValueError(f"unknown generation order {order!r}; use 'raster' or 'random'")


def group_sizes(n: int, steps: int) -> list[int]:
    """Positions produced at each of ``min(steps, n)`` steps (every step at least one; they sum to ``n``)."""
    steps = max(1, min(steps, n))
    sizes, known = [], 0
    for s in range(steps):
        left = math.floor(n * float(cosine_mask_ratio((s + 1) / steps)))
        left = min(left, n - known - 1) if s < steps - 1 else 0  # at least one new position per step
        left = max(left, steps - s - 1)  # ... and leave one for every later step
        sizes.append(n - left - known)
        known = n - left
    return sizes


def order_mask(order: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """[B, n] bool: the last ``count[b]`` positions of row b's ``order`` (what is still unknown)."""
    n = order.shape[1]
    rank = order.argsort(-1)  # rank[b, p]: when position p comes in row b's order
    return rank >= (n - count)[:, None]


def training_mask(order: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, n] bool: a cosine-schedule share ``cos(pi/2 u)``, u ~ U(0, 1), of each row masked (>= 1 position),
    taken from the end of the row's generation order."""
    ratio = cosine_mask_ratio(torch.rand(order.shape[0], generator=generator))
    return order_mask(order, masked_count(ratio, order.shape[1]).long().to(order.device))
