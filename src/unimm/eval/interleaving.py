"""Evaluation of interleaved generation (``unimm eval --suite interleaved``): the model answers the tasks of
``eval/interleaved.py`` with ``UnifiedModel.interleave`` and every image is scored in its slot.

The tasks fit the run's dataset: on a digit dataset the ``digits`` and ``count`` kinds (each image judged by the
in-project classifier of the dataset, as prompt accuracy is), on the shapes dataset the ``shapes`` kind (GenEval
checks of each slot's caption, consistency of the second image with the first, on images brought to the stored
32 px first when the model works at another size: ``scored_resized``). Rates carry Wilson 95 % intervals; slot
accuracy also a bootstrap 95 % interval over tasks, since the slots of one task are not independent. A reply
with fewer images than slots scores its missing slots wrong; the stop reasons are counted.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unimm.data import load_split
from unimm.eval.cache import default_cache
from unimm.eval.classifier import load_or_train_classifier
from unimm.eval.interleaved import classifier_callable, make_tasks, score_tasks
from unimm.eval.suites import Suite, suite_by_name
from unimm.io import to_uint8
from unimm.train.interleaved import InterleavedExamples

SHAPES_SIZE = 32  # the stored shapes images: the scorers' tolerances are in their pixels


def bootstrap_slot_accuracy(slots: list[tuple[bool, ...]], reps: int, seed: int) -> list[float]:
    """A 95 % percentile interval of the slot accuracy, resampling whole tasks (``slots``: each task's verdicts)."""
    if not slots:
        return [0.0, 1.0]
    gen = torch.Generator().manual_seed(seed)
    hits = torch.tensor([sum(s) for s in slots], dtype=torch.float64)
    counts = torch.tensor([len(s) for s in slots], dtype=torch.float64)
    pick = torch.randint(0, len(slots), (reps, len(slots)), generator=gen)
    acc = hits[pick].sum(1) / counts[pick].sum(1)
    return [float(acc.quantile(0.025)), float(acc.quantile(0.975))]


def _for_scoring(image: torch.Tensor, kind: str) -> np.ndarray:
    """A reply image [C, S, S] -> uint8 as its scorer takes it: the model's own pixels for digits, RGB at the
    stored 32 px for shapes."""
    if kind == "shapes":
        image = image.expand(3, -1, -1)[None]
        if image.shape[-1] != SHAPES_SIZE:
            image = F.interpolate(image, size=(SHAPES_SIZE, SHAPES_SIZE), mode="bilinear", align_corners=False)
        return to_uint8(image)[0]
    return to_uint8(image[None])[0]


def evaluate_interleaved(
    model,
    suite: str | Suite = "interleaved",
    seed: int = 0,
    data_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Slot accuracy, task accuracy and consistency of ``model`` on ``suite.interleaved_n`` tasks; JSON-ready with
    ``"_images"`` (per task, the reply's images, for the report; drop it before saving)."""
    s = suite if isinstance(suite, Suite) else suite_by_name(suite)
    cfg = model.cfg
    path = data_path or cfg.data.path
    size, ch = cfg.data.image_size, cfg.data.channels
    kind = InterleavedExamples(load_split(path, "test", size, ch)).kind
    tasks = [t for t in make_tasks(3 * s.interleaved_n, seed) if (t.kind == "shapes") == (kind == "shapes")]
    tasks = tasks[: s.interleaved_n]
    classify, clf_acc = None, None
    if kind == "digits":
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache()
        clf, clf_acc = load_or_train_classifier(
            path, "train", size, ch, cache / "classifiers", steps=s.classifier_steps, progress=progress
        )
        classify = classifier_callable(clf)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    t0, replies = time.perf_counter(), []
    for i, task in enumerate(tasks):
        if progress and i % 10 == 0:
            print(f"interleaved {i}/{len(tasks)}", flush=True)
        reply = model.interleave(
            task.prompt, generator=gen, max_images=len(task.slots), max_new_tokens=s.interleaved_tokens
        )
        replies.append(reply)
    seconds = time.perf_counter() - t0
    images = [[_for_scoring(im.cpu(), kind) for im in r.images] for r in replies]
    scores = score_tasks(tasks, images, classify)
    scores["slot_accuracy"]["bootstrap_ci"] = bootstrap_slot_accuracy(
        [tuple(r["slots"]) for r in scores["results"]], s.bootstrap_reps, seed
    )
    for result, reply, task in zip(scores["results"], replies, tasks, strict=True):
        result.update(prompt=task.prompt, text=reply.text, images=len(reply.images), stop=reply.stop)
    return {
        "suite": s.name,
        "seed": seed,
        "dataset": {"path": str(path), "tasks": len(tasks), "kind": kind},
        "interleaved": {
            **scores,
            "stops": dict(Counter(r.stop for r in replies)),
            "classifier_test_accuracy": clf_acc,
            "scored_resized": kind == "shapes" and (size != SHAPES_SIZE or ch != 3),
            "seconds_per_task": seconds / max(len(tasks), 1),
        },
        "_images": [[im.cpu() for im in r.images] for r in replies],
    }
