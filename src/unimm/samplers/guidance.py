"""Classifier-free guidance as a wrapper around a model callable."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

ModelFn = Callable[[Tensor, Tensor], Tensor]


def guide(output: Tensor, scale: float) -> Tensor:
    """A doubled batch's output ``[2B, ...]`` (conditional half first) -> ``uncond + scale * (cond - uncond)``
    ``[B, ...]``: the one place the guidance mix is written. Logits are mixed in fp32."""
    cond, uncond = output.chunk(2)
    if not output.is_floating_point() or output.dtype != torch.float32:
        cond, uncond = cond.float(), uncond.float()
    return uncond + scale * (cond - uncond)


def classifier_free_guidance(model_fn: ModelFn, scale: float) -> ModelFn:
    """Wrap a doubled-batch model into a guided one.

    ``model_fn(x: [2B, ...], t: [2B]) -> [2B, ...]`` must evaluate its first half with the condition and its
    second half without (the caller builds the conditioning that way). Returns
    ``fn(x: [B, ...], t: [B]) -> uncond + scale * (cond - uncond)``, one model call per step.
    Scale 0 gives the unconditional output, scale 1 the conditional one; at scale 1 callers should skip the
    wrapper and call the conditional model directly, which halves the batch.
    Works for any prediction target (epsilon, v, flow velocity).
    """

    def guided(x: Tensor, t: Tensor) -> Tensor:
        return guide(model_fn(torch.cat([x, x]), torch.cat([t, t])), scale).to(x.dtype)

    return guided
