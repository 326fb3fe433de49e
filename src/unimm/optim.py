"""AdamW with explicit weight-decay groups, warmup + cosine and warmup-stable-decay (WSD) schedules, an EMA of
weights, and the small fitting loop that parts pre-trained on their own (ViT reader, connector decoder) share."""

import math
from collections.abc import Callable, Hashable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from unimm.flops import FitFlops


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]):
    """Decay matrices (linear and embedding weights); never decay biases and norm gains."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=False)


def warmup_cosine(warmup: int, total: int, min_ratio: float):
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def cooldown_steps(total: int, cooldown: float) -> int:
    """Steps a WSD run of ``total`` steps spends decaying: ``cooldown`` of them, rounded half up."""
    return math.floor(total * cooldown + 0.5)


def fork_step(total: int, cooldown: float) -> int:
    """The step where a WSD run of ``total`` steps leaves its stable phase: a cooldown branch of that budget
    forks a longer stable run here (every step before it has the same LR in both)."""
    return total - cooldown_steps(total, cooldown)


def branching_steps(budgets: list[int], cooldown: float) -> tuple[int, int]:
    """Training steps to reach every budget in ``budgets`` with WSD: (one dedicated run per budget, one stable
    run to the largest budget that decays itself + a cooldown branch of ``cooldown_steps`` for each other)."""
    if not budgets:
        return 0, 0
    largest = max(budgets)
    others = list(budgets)
    others.remove(largest)
    return sum(budgets), largest + sum(cooldown_steps(b, cooldown) for b in others)


def warmup_stable_decay(warmup: int, total: int, cooldown: float, shape: str, min_ratio: float):
    """LR multiplier (Hägele et al. 2024): linear warmup over ``warmup`` steps, 1 until the last
    ``cooldown_steps(total, cooldown)`` steps, then a decay to ``min_ratio`` at ``total``: ``1 - p`` (linear)
    or ``1 - sqrt(p)`` (sqrt) of progress ``p`` through the decay (1 at its first step, as the stable phase)."""
    if shape not in ("linear", "sqrt"):
        raise ValueError(f"cooldown shape {shape!r}: expected 'linear' or 'sqrt'")
    decay = cooldown_steps(total, cooldown)
    start = total - decay

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if step < start or decay == 0:
            return 1.0
        progress = min(1.0, (step - start) / decay)
        left = 1 - progress if shape == "linear" else 1 - math.sqrt(progress)
        return min_ratio + (1 - min_ratio) * left

    return factor


class EMA:
    """Bias-corrected exponential moving average of a model's floating-point parameters and buffers.

    After ``n`` updates with weights ``w_1 .. w_n`` the shadow holds ``sum_i (1-d) d^(n-i) w_i / (1 - d^n)``:
    Adam's bias correction, so the initial (random) weights carry no weight at all, however short the run.
    The update is a lerp with rate ``(1-d) / (1-d^n)``: 1 at the first update (a copy), ``1-d`` in the limit.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay, self.updates = decay, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        rate = (1 - self.decay) / (1 - self.decay**self.updates)
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v, rate)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Full state dict of ``model`` with the averaged tensors in place of the live ones."""
        return {k: self.shadow.get(k, v) for k, v in model.state_dict().items()}


def pretrain(
    params: list[nn.Parameter],
    draw: Callable[[], Any],
    step_loss: Callable[[Any], torch.Tensor],
    steps: int,
    lr: float,
    schedule: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler],
    weight_decay: float = 0.0,
    desc: str = "pre-train",
    progress: bool = True,
    flops: FitFlops | None = None,
    key: Callable[[Any], Hashable] = lambda batch: None,
) -> float:
    """``steps`` AdamW updates of ``params`` on ``step_loss(draw())`` (a fresh batch each step) under the LR
    ``schedule`` built on the optimizer; gradients are cleared at the end. Returns the last loss. ``flops``
    counts the steps (forward, backward, update), a step's ``key(batch)`` naming what sets its cost."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = schedule(opt)
    bar = tqdm(range(steps), disable=not progress, desc=desc, unit="step")
    loss = torch.zeros(())
    for _ in bar:
        batch = draw()
        with flops.step(key(batch)) if flops is not None else nullcontext():
            loss = step_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())
