"""Equal budgets: price one training step by running real ones, then set ``train.steps`` to spend what is left.

FLOPs are counted the way training counts them (``count_flops()`` around forward + backward of the step's
micro-batches, on the batches that training counts: steps 0, ``flops_every``, ...), with the frozen codec's
encoder measured apart (``unimm/train/frozen.py``): a step is priced without it, and the encoder is charged once
per distinct input the steps feed it. A FLOP budget then buys the fewest steps ``s`` with

    charged preparation + s x step FLOPs + encoder FLOPs per input x distinct inputs of s steps >= budget,

where the charged preparation is, in the ``scratch`` regime, the run's own counted preparation (VAE / VQ fit,
ViT and decoder pre-training) plus a shared tokenizer when the atlas charges it to every run, and nothing in the
``pretrained`` regime (preparation spends the side budget: ``atlas/side.py``). A run whose charged preparation
alone reaches the budget is refused (``BudgetError``). Seconds (a ``wall_s`` budget) are the mean wall time of
whole steps (optimizer update and frozen encoder included: they run) after one warm-up step; the scratch regime
charges the preparation's wall seconds.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch

from unimm.config import Config
from unimm.models import UnifiedModel
from unimm.optim import build_optimizer
from unimm.settings import READERS
from unimm.train.frozen import EncoderInputs, StepFlops, codec_inputs
from unimm.train.kernels import compute
from unimm.train.loop import build_tokenizer, make_batch, resolve_data, resolve_image_tokenizer
from unimm.train.stream import ExampleStream


class BudgetError(ValueError):
    """A run's charged preparation alone spends its budget."""


@dataclass
class StepCost:
    flops: float  # counted FLOPs of one optimizer step (forward + backward of its micro-batches), frozen encoder out
    tokens: float  # packed tokens of one step
    seconds: float | None  # wall seconds of one step (None when not timed)
    measured_steps: int
    encoder_flops_per_input: float = 0.0  # the frozen codec encoder's FLOPs per encoded image


def _stream(cfg: Config, data, templates) -> ExampleStream:
    t = cfg.train
    return ExampleStream(data, templates, cfg.data, t.batch_size // (t.batch_shards or 1), t.seed)


def encoder_inputs(cfg: Config) -> EncoderInputs:
    """The run's distinct frozen-encoder inputs, to be advanced over its steps."""
    data, templates = resolve_data(cfg.model_copy(deep=True))
    t = cfg.train
    encoded = codec_inputs(READERS.cls(cfg.reader.kind).shared)
    return EncoderInputs(_stream(cfg, data, templates), t.grad_accum * (t.batch_shards or 1), encoded)


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
    stream = _stream(cfg, data, templates)
    opt = build_optimizer(model, t.lr, t.weight_decay, t.betas)
    encoded = codec_inputs(model.reader.shared)

    def forward_backward(index: int, meter: StepFlops | None = None) -> tuple[int, int]:
        tokens, expected = 0, 0
        micro = [(index * t.grad_accum + m) * shards + s for m in range(t.grad_accum) for s in range(shards)]
        for k in micro:
            images, examples = stream.batch(k)
            batch = make_batch(model, images, examples).to(device)
            with meter.count() if meter is not None else nullcontext():
                with compute(t, torch.device(device)):
                    loss, _ = model(batch, torch.Generator().manual_seed(t.seed * 7_919 + k))
                (loss / len(micro)).backward()
            tokens += batch.tokens.numel()
            expected += sum(len(encoded(*sample)) for sample in stream.samples(k))
        return tokens, expected

    def update() -> None:
        opt.step()
        opt.zero_grad(set_to_none=True)

    meter, tokens, expected = StepFlops(model.writer.codec), [], 0
    for i in range(steps):
        n, e = forward_backward(i * max(1, t.flops_every), meter)
        tokens.append(n)
        expected += e
        update()
    if meter.encoder_inputs != expected:
        raise RuntimeError(
            f"the frozen codec encoded {meter.encoder_inputs} images in {steps} steps where train/frozen.py's "
            f"rule expects {expected}: the rule no longer matches UnifiedModel.forward"
        )
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
    return StepCost(meter.flops / steps, sum(tokens) / steps, seconds, steps, meter.per_input)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def steps_for_budget(kind: str, budget: float, cost: StepCost, encoder: EncoderInputs | None = None) -> int:
    """The fewest steps that spend ``budget`` (FLOPs or seconds) at ``cost`` per step, at least one; a FLOP budget
    also pays the frozen encoder once per distinct input of ``encoder`` (advanced here over the steps)."""
    per_step = cost.flops if kind == "flops" else cost.seconds
    if not per_step or per_step <= 0:
        raise ValueError(f"cannot price a training step for a {kind} budget (measured {per_step})")
    plain = max(1, math.ceil(budget / per_step - 1e-9))
    if kind != "flops" or encoder is None or not cost.encoder_flops_per_input:
        return plain
    for steps in range(1, plain + 1):
        encoder.advance(steps)
        if steps * per_step + cost.encoder_flops_per_input * encoder.distinct >= budget * (1 - 1e-9):
            return steps
    return plain


def check_left(name: str, kind: str, budget: float, charged: dict[str, float], regime: str) -> float:
    """What the budget leaves for training after the ``charged`` items; ``BudgetError`` when nothing is left."""
    left = budget - sum(charged.values())
    if left <= 0:
        unit = "FLOPs" if kind == "flops" else "s"
        items = ", ".join(f"{k} {v:.3g}" for k, v in charged.items())
        raise BudgetError(
            f"run {name}: its preparation alone costs {sum(charged.values()):.3g} {unit} ({items}), the whole "
            f"{kind} budget of {budget:.3g} {unit} (regime {regime}, preparation charged to the budget): raise the "
            "budget, shorten the preparation (codec.steps, reader.pretrain_steps, writer.pretrain_steps) or use "
            "the pretrained regime"
        )
    return left


def budget_plan(cfg: Config, kind: str, left: float, cost: StepCost, checkpoints: int) -> dict[str, Any]:
    """Steps for what is ``left`` of the budget plus the schedule that follows from them: warm-up capped at a fifth
    of the run, ``checkpoints`` evenly spaced checkpoints, about 50 logged rows or more."""
    encoder = encoder_inputs(cfg) if kind == "flops" else None
    steps = steps_for_budget(kind, left, cost, encoder)
    encoder_flops = cost.encoder_flops_per_input * encoder.advance(steps).distinct if encoder is not None else None
    t = cfg.train
    return {
        "step_cost": asdict(cost),
        "left": left,
        "steps": steps,
        "expected_flops": steps * cost.flops,
        "expected_encoder_flops": encoder_flops,
        "warmup": min(t.warmup, steps // 5),
        "save_every": max(1, math.ceil(steps / checkpoints)),
        "log_every": max(1, min(t.log_every, steps // 50)),
    }
