"""Generation metric: draw images from caption prompts and ask a classifier whether they show the class."""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from unimm.data import CaptionTemplates
from unimm.eval.classifier import ImageClassifier


class Generator(Protocol):
    def generate(
        self,
        prompts: list[str],
        cfg_scale: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...


def class_prompts(templates: CaptionTemplates, label: int, count: int) -> list[str]:
    """``count`` prompts for ``label`` walking through every caption template in contiguous blocks
    (template 0 for the first block, ...), so the first samples of a class share one prompt."""
    captions = templates.all_captions(label)
    block = math.ceil(count / len(captions))
    return [captions[i // block] for i in range(count)]


def generated_accuracy(
    model: Generator,
    clf: ImageClassifier,
    class_names: list[str],
    templates: CaptionTemplates,
    per_class: int = 100,
    seed: int = 0,
    batch_size: int = 100,
    grid_per_class: int = 10,
    cfg_scale: float | None = None,
    steps: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate ``per_class`` images for every class and classify them.

    Sampling noise comes from one ``torch.Generator`` seeded with ``seed``, consumed in batches of
    ``batch_size`` in class order, so the result is reproducible for fixed (seed, batch_size).
    Returns ``generated_accuracy``, ``per_class_accuracy``, ``confusion`` (``[true][predicted]`` counts),
    ``n``, ``per_class``, ``seed``, ``prompts`` (the distinct prompts per class) and, for a sample grid,
    ``grid_images`` ``[K, g, C, H, W]`` (the first ``g = min(grid_per_class, per_class)`` images of each
    class), ``grid_prompts`` and ``grid_predictions`` (``[K][g]``).
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    k = len(class_names)
    jobs = [(label, p) for label in range(k) for p in class_prompts(templates, label, per_class)]
    gen = torch.Generator().manual_seed(seed)
    images = []
    for i in tqdm(range(0, len(jobs), batch_size), disable=not progress, desc="generate", unit="batch"):
        prompts = [p for _, p in jobs[i : i + batch_size]]
        images.append(model.generate(prompts, cfg_scale=cfg_scale, steps=steps, generator=gen).cpu())
    all_images = torch.cat(images)
    labels = torch.tensor([label for label, _ in jobs])
    preds = clf.predict(all_images)
    confusion = torch.zeros(k, k, dtype=torch.long)
    confusion.index_put_((labels, preds.clamp(0, k - 1)), torch.ones_like(labels), accumulate=True)
    g = min(grid_per_class, per_class)
    distinct = {name: list(dict.fromkeys(class_prompts(templates, c, per_class))) for c, name in enumerate(class_names)}
    by_class = all_images.view(k, per_class, *all_images.shape[1:])
    return {
        "generated_accuracy": float((preds == labels).float().mean()),
        "per_class_accuracy": (confusion.diag().float() / per_class).tolist(),
        "confusion": confusion.tolist(),
        "n": len(jobs),
        "per_class": per_class,
        "seed": seed,
        "prompts": distinct,
        "grid_images": by_class[:, :g],
        "grid_prompts": [[p for _, p in jobs[c * per_class : c * per_class + g]] for c in range(k)],
        "grid_predictions": preds.view(k, per_class)[:, :g].tolist(),
    }
