"""Equal budgets: price one training step by running real ones, then set ``train.steps`` to spend the budget.

FLOPs are counted the way training counts them (``count_flops()`` around forward + backward of the step's
micro-batches, on the batches that training counts: steps 0, ``flops_every``, ...), so the run's logged
``train_flops`` lands on the budget up to the rounding of the last step and the spread of batch lengths.
Seconds are the mean wall time of whole steps (optimizer update included) after one warm-up step, taken
under the thread setting and the machine load of the moment. Preparation (VAE / VQ / ViT / decoder
pre-training) is not part of either budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch

from unimm.config import Config
from unimm.flops import count_flops
from unimm.models import UnifiedModel
from unimm.optim import build_optimizer
from unimm.train.loop import build_tokenizer, make_batch, resolve_data, resolve_image_tokenizer
from unimm.train.stream import ExampleStream


@dataclass
class StepCost:
    flops: float  # counted FLOPs of one optimizer step (forward + backward of all its micro-batches)
    tokens: float  # packed tokens of one step
    seconds: float | None  # wall seconds of one step (None when not timed)
    measured_steps: int


def measure_step_cost(cfg: Config, steps: int = 3, timed: bool = False, device: str = "cpu") -> StepCost:
    """Build the run's model (image tokenizers unfitted: their cost does not depend on their weights) and
    run ``steps`` real training steps of its data stream; with ``timed``, also ``steps`` timed ones."""
    cfg = cfg.model_copy(deep=True)
    t = cfg.train
    data, templates = resolve_data(cfg)
    resolve_image_tokenizer(cfg)
    torch.manual_seed(t.seed)
    model = UnifiedModel(cfg, build_tokenizer(cfg, data, templates))
    model.freeze_fixed()  # as after preparation: frozen parts get no weight gradients
    model.to(device).train()
    shards = t.batch_shards or 1
    stream = ExampleStream(data, templates, cfg.data, t.batch_size // shards, t.seed)
    opt = build_optimizer(model, t.lr, t.weight_decay, t.betas)

    def forward_backward(index: int) -> int:
        tokens = 0
        micro = [(index * t.grad_accum + m) * shards + s for m in range(t.grad_accum) for s in range(shards)]
        for k in micro:
            images, examples = stream.batch(k)
            batch = make_batch(model, images, examples).to(device)
            loss, _ = model(batch, torch.Generator().manual_seed(t.seed * 7_919 + k))
            (loss / len(micro)).backward()
            tokens += batch.tokens.numel()
        return tokens

    def update() -> None:
        opt.step()
        opt.zero_grad(set_to_none=True)

    flops, tokens = [], []
    for i in range(steps):
        with count_flops() as counter:  # forward + backward, as training counts them
            tokens.append(forward_backward(i * max(1, t.flops_every)))
        flops.append(counter.get_total_flops())
        update()
    seconds = None
    if timed:
        forward_backward(steps)  # warm-up: allocator, kernels
        update()
        _sync(device)
        t0 = time.perf_counter()
        for i in range(steps):
            forward_backward(steps + 1 + i)
            update()
        _sync(device)
        seconds = (time.perf_counter() - t0) / steps
    return StepCost(sum(flops) / steps, sum(tokens) / steps, seconds, steps)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def steps_for_budget(kind: str, budget: float, cost: StepCost) -> int:
    """The fewest steps that spend ``budget`` (FLOPs or seconds) at ``cost`` per step; at least one."""
    per_step = cost.flops if kind == "flops" else cost.seconds
    if not per_step or per_step <= 0:
        raise ValueError(f"cannot price a training step for a {kind} budget (measured {per_step})")
    return max(1, math.ceil(budget / per_step - 1e-9))


def budget_plan(cfg: Config, kind: str, budget: float, measure_steps: int, checkpoints: int, device: str) -> dict:
    """Steps for the budget plus the schedule settings that follow from them: warm-up capped at a fifth of
    the run, ``checkpoints`` evenly spaced checkpoints, about 50 logged rows or more."""
    cost = measure_step_cost(cfg, measure_steps, timed=kind == "wall_s", device=device)
    steps = steps_for_budget(kind, budget, cost)
    t = cfg.train
    return {
        "kind": kind,
        "budget": budget,
        "step_cost": asdict(cost),
        "steps": steps,
        "expected_flops": steps * cost.flops,
        "warmup": min(t.warmup, steps // 5),
        "save_every": max(1, math.ceil(steps / checkpoints)),
        "log_every": max(1, min(t.log_every, steps // 50)),
    }
