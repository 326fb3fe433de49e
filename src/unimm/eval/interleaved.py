"""Interleaved tasks (one prompt, several images in order) with exact expected slots, and their scoring.

Kinds (``make_tasks`` draws them, seeded):
- ``digits``: "write the digits of 2024, one image each" -> slots (2, 0, 2, 4);
- ``count``: "three, then the next one, then the next" -> slots (3, 4, 5);
- ``shapes``: "draw a red circle. Now add a blue square to its right." -> slots ("a red circle",
  "a blue square right of a red circle"), shapes captions checked by ``geneval.check_image``.
A digit slot is right when ``classify(image)`` returns its class (any callable: the in-project CNN through
``classifier_callable``, or a fake in tests); a shapes slot when every GenEval check passes. ``consistency``
(shapes only): every object detected in slot 1 is in slot 2 with its colour, shape and size, its centre
within ``tolerance`` pixels; False when slot 1 shows nothing. A shapes slot also keeps which GenEval checks its
image passed (``checks``; None for a missing image), so that a report can say why slots fail: the wrong shape, a
missing or extra object, the wrong colour or the wrong place.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from unimm.data.shapes import COLOURS, SHAPES, detect_objects
from unimm.eval.edits import TOLERANCE, near
from unimm.eval.geneval import CHECKS, check_image
from unimm.eval.intervals import rate

if TYPE_CHECKING:
    from unimm.eval.classifier import ImageClassifier

TASK_KINDS = ("digits", "count", "shapes")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_PLACES = {"right of": "to its right", "left of": "to its left", "above": "above it", "below": "below it"}

Classify = Callable[[np.ndarray], int]


@dataclass(frozen=True)
class InterleavedTask:
    """A prompt and what each image slot must show: a digit class, or a shapes caption."""

    kind: str
    prompt: str
    slots: tuple[int | str, ...]


def digits_task(number: int) -> InterleavedTask:
    return InterleavedTask("digits", f"write the digits of {number}, one image each", tuple(map(int, str(number))))


def count_task(start: int, length: int) -> InterleavedTask:
    """Count up from ``start`` for ``length`` images (at most nine)."""
    if length < 2 or start < 0 or start + length - 1 > 9:
        raise ValueError(f"cannot count {length} images up from {start} in digits")
    words = [NUMBER_WORDS[start], "then the next one", *["then the next"] * (length - 2)]
    return InterleavedTask("count", ", ".join(words), tuple(range(start, start + length)))


def shapes_task(first: tuple[str, str], second: tuple[str, str], relation: str) -> InterleavedTask:
    """``first`` and ``second`` are (colour, shape); the second goes ``relation`` the first."""
    a, b = " ".join(first), " ".join(second)
    prompt = f"draw a {a}. Now add a {b} {_PLACES[relation]}."
    return InterleavedTask("shapes", prompt, (f"a {a}", f"a {b} {relation} a {a}"))


def make_tasks(n: int, seed: int = 0) -> list[InterleavedTask]:
    """``n`` tasks cycling through ``TASK_KINDS``, the same for the same seed."""
    rng = random.Random(f"interleaved {seed}")
    tasks = []
    for i in range(n):
        kind = TASK_KINDS[i % len(TASK_KINDS)]
        if kind == "digits":
            tasks.append(digits_task(rng.randint(10, 9999)))
        elif kind == "count":
            length = rng.randint(2, 4)
            tasks.append(count_task(rng.randint(0, 10 - length), length))
        else:
            pairs = [(c, s) for c in COLOURS for s in SHAPES]
            first, second = rng.sample(pairs, 2)
            tasks.append(shapes_task(first, second, rng.choice(list(_PLACES))))
    return tasks


@dataclass(frozen=True)
class TaskResult:
    """Per-slot verdicts (a missing image is wrong), consistency (None where it does not apply) and, for shapes,
    each slot's GenEval checks (``geneval.check_image``; None for a missing image; empty for other kinds)."""

    kind: str
    slots: tuple[bool, ...]
    consistency: bool | None
    checks: tuple[dict[str, bool | None] | None, ...] = ()


def consistent(first: np.ndarray, second: np.ndarray, tolerance: int = TOLERANCE) -> bool:
    """Every object of ``first`` is in ``second`` unchanged (colour, shape, size; centre within tolerance)."""
    before, after = detect_objects(first), detect_objects(second)
    return bool(before) and all(any(near(a, b, tolerance) and a.size == b.size for b in after) for a in before)


def score_task(
    task: InterleavedTask, images: Sequence[np.ndarray], classify: Classify | None = None, tolerance: int = TOLERANCE
) -> TaskResult:
    """Score one task's images (uint8; ``[H, W, 3]`` for shapes) in slot order."""
    if task.kind != "shapes" and classify is None:
        raise ValueError(f"a {task.kind} task needs a classify callable")
    verdicts, checks = [], []
    for slot, image in zip(task.slots, images, strict=False):
        if task.kind == "shapes":
            checks.append(check_image(image, str(slot)))
            verdicts.append(bool(checks[-1]["overall"]))
        else:
            verdicts.append(int(classify(image)) == slot)
    verdicts += [False] * (len(task.slots) - len(verdicts))
    consistency = None
    if task.kind == "shapes":
        consistency = len(images) >= 2 and consistent(images[0], images[1], tolerance)
        checks += [None] * (len(task.slots) - len(checks))
    return TaskResult(task.kind, tuple(verdicts), consistency, tuple(checks))


def slot_checks(results: Sequence[TaskResult]) -> list[dict[str, Any]]:
    """Per slot position of the shapes tasks, how often each GenEval check passed: ``[{check: {rate, n, ci}}]``,
    ``missing`` counting the slots without an image (they count as failing every check). Empty without shapes."""
    rows = [r for r in results if r.kind == "shapes"]
    out = []
    for slot in range(max((len(r.slots) for r in rows), default=0)):
        seen = [r.checks[slot] if slot < len(r.checks) else None for r in rows if slot < len(r.slots)]
        row: dict[str, Any] = {}
        for check in CHECKS:
            applies = [c for c in seen if c is None or c[check] is not None]
            if applies:
                row[check] = rate(sum(bool(c and c[check]) for c in applies), len(applies))
        row["missing"] = sum(c is None for c in seen)
        out.append(row)
    return out


def score_tasks(
    tasks: Sequence[InterleavedTask],
    images: Sequence[Sequence[np.ndarray]],
    classify: Classify | None = None,
    tolerance: int = TOLERANCE,
) -> dict[str, Any]:
    """Per-task results; ``slot_accuracy`` (over all slots), ``task_accuracy`` (every slot right) and
    ``consistency`` (shapes tasks), each ``{rate, n, ci}`` with a Wilson 95 % interval, also per kind; and the
    shapes slots' GenEval checks per slot position (:func:`slot_checks`)."""
    if len(images) != len(tasks):
        raise ValueError(f"got images for {len(images)} tasks but {len(tasks)} tasks")
    results = [score_task(t, ims, classify, tolerance) for t, ims in zip(tasks, images, strict=True)]

    def rates(rows: list[TaskResult]) -> dict[str, Any]:
        slots = [v for r in rows for v in r.slots]
        checked = [r.consistency for r in rows if r.consistency is not None]
        return {
            "slot_accuracy": rate(sum(slots), len(slots)),
            "task_accuracy": rate(sum(all(r.slots) for r in rows), len(rows)),
            "consistency": rate(sum(checked), len(checked)),
        }

    per_kind = {k: rates([r for r in results if r.kind == k]) for k in TASK_KINDS if any(r.kind == k for r in results)}
    return {
        **rates(results),
        "per_kind": per_kind,
        "shapes_slot_checks": slot_checks(results),
        "results": [asdict(r) for r in results],
    }


def classifier_callable(classifier: ImageClassifier) -> Classify:
    """Wrap an ``ImageClassifier`` as image -> class: uint8 ``[H, W]`` or ``[H, W, C]`` of its size."""
    import torch

    def classify(image: np.ndarray) -> int:
        x = torch.as_tensor(np.asarray(image), dtype=torch.float32) / 127.5 - 1.0
        x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
        with torch.no_grad():
            return int(classifier(x).argmax(-1))

    return classify
