"""Cost metrics: parameters (total / active per token / trainable), peak memory, timing, inference FLOPs per
caption and per generated image, training cost (steps, tokens, FLOPs, wall time and the run's FLOP ledger)."""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unimm.flops import count_flops
from unimm.nn.moe import MoEFeedForward
from unimm.nn.mot import MoTBlock


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``total``; ``active``: used per token (a routed layer counts top-k of its experts, a
    Mixture-of-Transformers block one modality's branch); ``trainable``: not frozen."""
    total = sum(p.numel() for p in model.parameters())
    idle = 0
    for m in model.modules():
        if isinstance(m, MoEFeedForward):
            experts = m.w_gate_up.numel() + m.w_down.numel()
            idle += experts * (m.num_experts - m.top_k) // m.num_experts
        elif isinstance(m, MoTBlock):
            branch = sum(p.numel() for p in m.branches[0].parameters())
            idle += branch * (len(m.branches) - 1)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "active": total - idle, "trainable": trainable}


def peak_memory_mib(device: torch.device | str = "cpu") -> float:
    """Peak memory of this process so far: CUDA allocator peak on a GPU, else the peak resident set size."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def timed(fn: Callable[[], Any], repeats: int = 3) -> tuple[Any, float]:
    """Run ``fn`` ``repeats`` times; (last result, median seconds of one call)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, sorted(times)[len(times) // 2]


@contextmanager
def counting_calls(module: nn.Module) -> Iterator[list[int]]:
    """Count ``module``'s forward calls inside the block: yields a one-item list holding the count so far."""
    count = [0]

    def hook(*_) -> None:
        count[0] += 1

    handle = module.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


def inference_flops(model: nn.Module, images: torch.Tensor, prompts: list[str], seed: int) -> dict[str, Any]:
    """FLOPs of one caption and of one generated image, as ``count_flops`` counts them: one small batch of each
    (``images``, ``prompts``) counted and divided by its size; decoding lengths vary, so this is that batch's."""
    with torch.no_grad(), count_flops() as caption:
        model.caption(images)
    with torch.no_grad(), count_flops() as generate:
        model.generate(prompts, generator=torch.Generator().manual_seed(seed))
    return {
        "flops_per_caption": caption.get_total_flops() / len(images),
        "flops_per_image": generate.get_total_flops() / len(prompts),
        "captions_counted": len(images),
        "images_counted": len(prompts),
    }


def training_cost(run_dir: str | Path | None) -> dict[str, Any]:
    """From a run directory: steps, tokens, FLOPs (``metrics.jsonl``, counted during training; ``train_flops``
    without the frozen encoder, ``encoder_flops`` charged once per distinct input), the run's FLOP ledger
    (``ledger.json``) and the training wall time (``report/training_time.json``), when recorded."""
    if run_dir is None:
        return {}
    run_dir = Path(run_dir)
    out: dict[str, Any] = {}
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        lines = metrics.read_text().splitlines()
        if lines:
            last = json.loads(lines[-1])
            keys = ("step", "train_flops", "encoder_flops", "tokens", "tokens_per_s")
            out.update({k: last[k] for k in keys if k in last})
    ledger = run_dir / "ledger.json"
    if ledger.is_file():
        out["ledger"] = json.loads(ledger.read_text())
    timing = run_dir / "report" / "training_time.json"
    if timing.is_file():
        out["train_wall_s"] = json.loads(timing.read_text()).get("wall_s")
    return out
