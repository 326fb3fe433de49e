"""Evaluation of an editing model (a run trained on an edit dataset, ``data/edits.py``) on its held-out edits.

The first ``suite.edits_n`` test edits are applied to their sources with ``UnifiedModel.edit`` (seeded, the
run's sampling settings) and every edited image is scored exactly against its edit by ``eval/edits.py``: edit
accuracy, preservation and both, with Wilson 95 % intervals, overall and per edit kind. A model that works at
another size or channel count than the stored edits has its images brought to theirs (bilinear, grey repeated
to RGB) before scoring; the result says so (``scored_resized``), since the scorers' tolerances are in pixels of
the stored size.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unimm.data.edit_store import is_edit_dataset
from unimm.data.edits import load_edits
from unimm.eval.edits import score_edits
from unimm.eval.suites import Suite, suite_by_name
from unimm.io import to_uint8


def _to_pixels(images: np.ndarray, model) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> [N, C, S, S] in [-1, 1] at the model's channels and size."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    if model.cfg.data.channels == 1:
        x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(1, keepdim=True)
    size = model.cfg.data.image_size
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(-1, 1)


def _to_stored(images: torch.Tensor, size: int) -> np.ndarray:
    """Edited images [N, C, S, S] in [-1, 1] -> uint8 [N, size, size, 3] as the stored edits are."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return to_uint8(images)


@torch.no_grad()
def roundtrip_scores(roundtrip, targets: torch.Tensor, edits: list, size: int) -> dict[str, Any]:
    """Edit scores of the true ``targets`` [N, C, S, S] after ``roundtrip`` (images -> images, e.g. a codec's
    encode then decode): rates of edit, preservation and both, and the mean pixel distance."""
    images = torch.cat([roundtrip(targets[i : i + 64]) for i in range(0, len(targets), 64)])
    scores = score_edits(list(_to_stored(images.clamp(-1, 1), size)), edits)
    return {k: v for k, v in scores.items() if k in ("edit", "preservation", "both", "pixel_distance")}


def codec_ceiling(model, targets: torch.Tensor, edits: list, size: int) -> dict[str, Any] | None:
    """The scores of the true targets passed through the writer's codec (encode, then decode): the most any
    model that writes through this codec can score, since every image it makes is a decoded one. None for a
    writer without a codec of its own."""
    codec = getattr(model.writer, "codec", None)
    if codec is None or not hasattr(codec, "encode") or not hasattr(codec, "decode"):
        return None
    return roundtrip_scores(lambda x: codec.decode(codec.encode(x)), targets, edits, size)


def tokenizer_ceiling(tokenizer, path: str | Path, n: int = 500) -> dict[str, Any]:
    """The codec ceiling of an image tokenizer (``unimm tokenizer train``; ``reconstruct`` round trip) on the
    first ``n`` test edits of the edit dataset at ``path``, at their stored size (RGB)."""
    test = load_edits(path, "test")[:n]
    if not test:
        raise ValueError(f"{path}: no test edits to measure the tokenizer's ceiling on")
    targets = torch.from_numpy(np.stack([t.target for t in test])).permute(0, 3, 1, 2).float() / 127.5 - 1
    scores = roundtrip_scores(lambda x: tokenizer.reconstruct(x)[0], targets, [t.edit for t in test], targets.shape[-1])
    return {"test_edits": len(test), **scores}


def evaluate_edits(
    model,
    suite: str | Suite = "quick",
    seed: int = 0,
    data_path: str | Path | None = None,
    progress: bool = False,
    split: str = "test",
) -> dict[str, Any]:
    """Edit accuracy and preservation of ``model`` on the test edits of ``data_path`` (default: the run's
    data.path), or on its ``split = "val"`` edits (to choose sampling settings without looking at the test
    edits). JSON-ready, with ``"_sources"`` / ``"_edited"`` / ``"_targets"`` (tensors for the report; drop them
    before saving)."""
    s = suite if isinstance(suite, Suite) else suite_by_name(suite)
    path = data_path or model.cfg.data.path
    if not is_edit_dataset(path):
        raise ValueError(f"{path} is not an edit dataset (make one with `python -m unimm.data.edits --out DIR`)")
    if split not in ("test", "val"):
        raise ValueError(f"split {split!r}: expected 'test' or 'val' (training edits are never scored)")
    test = load_edits(path, split)[: s.edits_n]
    if not test:
        raise ValueError(f"{path}: no {split} edits to evaluate on")
    model.eval()
    sources = _to_pixels(np.stack([t.source for t in test]), model)
    instructions = [t.edit.instruction for t in test]
    gen = torch.Generator().manual_seed(seed)
    t0, chunks = time.perf_counter(), []
    for i in range(0, len(test), s.batch_size):
        if progress:
            print(f"edit {i}/{len(test)}", flush=True)
        chunks.append(model.edit(sources[i : i + s.batch_size], instructions[i : i + s.batch_size], generator=gen))
    seconds = time.perf_counter() - t0
    edited = torch.cat(chunks).cpu()
    size = test[0].target.shape[0]
    scores = score_edits(list(_to_stored(edited, size)), [t.edit for t in test])
    scores["scored_resized"] = edited.shape[-1] != size or edited.shape[1] != 3
    scores["seconds_per_edit"] = seconds / len(test)
    targets = _to_pixels(np.stack([t.target for t in test]), model)
    scores["codec_ceiling"] = codec_ceiling(model, targets, [t.edit for t in test], size)
    return {
        "suite": s.name,
        "seed": seed,
        "dataset": {"path": str(path), "split": split, "test_edits": len(test), "image_size": size},
        "sample": model.cfg.sample.model_dump(),  # the sampling settings the edits were made with
        "editing": scores,
        "_sources": sources,
        "_edited": edited,
        "_targets": targets,
        "_instructions": instructions,
    }
