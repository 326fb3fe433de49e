"""Exact scoring of an edited image against its edit (``data/edits.py``), read back with ``detect_objects``.

Two measures per image, each a pass/fail:
- ``edit``: the edited object changed as asked. recolour: an object of its shape in the new colour at its
  place; move: it at its new centre; swap: each at the other's centre (centres within ``tolerance`` pixels);
  add: an object of the added colour and shape anywhere; remove: no object of its colour and shape.
- ``preservation``: nothing else changed. ``objects_kept``: every other object of the target is found with
  its colour and shape within ``tolerance`` of its centre, and any further object is the edited one (moved,
  recoloured or left in place: the edit measure judges it); and ``pixel_distance``, the mean absolute
  difference (0..255, over channels) from the true target outside the edited region (the edited objects'
  boxes in source, target and produced image), is at most ``pixel_threshold``.
A failed measure also says why (``edit_failure``, ``preservation_failure``; None when it passed), from what was
detected where the object should be: ``shape`` (an object of its colour at its place, of another shape), ``colour``
(its shape at its place, in another colour), ``place`` (its colour and shape, elsewhere), ``missing`` (none of
these); for an add ``shape`` means an object of the added colour with another shape, for a remove ``not removed``;
preservation also fails by ``edited shape`` (an object left over is the edited one in its target colour, at its target
place for the kinds that set one, drawn as another shape: the edit's shape failure seen again), ``extra`` (any other
object that is neither kept nor the edited one) and ``pixels`` (every object right, the pixel distance above the
threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from unimm.data.edits import Edit
from unimm.data.shapes import ShapeObject, detect_objects, render
from unimm.eval.intervals import rate

TOLERANCE = 2  # pixels a detected centre may be off its true place
PIXEL_THRESHOLD = 8.0  # mean absolute difference outside the edited region that still counts as unchanged


@dataclass(frozen=True)
class EditResult:
    """One image's verdicts; ``preservation`` = ``objects_kept`` and ``pixel_distance <= pixel_threshold``."""

    kind: str
    edit: bool
    objects_kept: bool
    pixel_distance: float
    preservation: bool
    edit_failure: str | None = None
    preservation_failure: str | None = None


EDIT_FAILURES = ("shape", "colour", "place", "missing", "not removed")
PRESERVATION_FAILURES = ("shape", "colour", "place", "missing", "edited shape", "extra", "pixels")


def _offset(a: ShapeObject, b: ShapeObject) -> int:
    return max(abs(a.centre[0] - b.centre[0]), abs(a.centre[1] - b.centre[1]))


def near(a: ShapeObject, b: ShapeObject, tolerance: int = TOLERANCE) -> bool:
    """Same colour and shape, centres at most ``tolerance`` pixels apart along each axis."""
    return a.name == b.name and _offset(a, b) <= tolerance


def _others(edit: Edit) -> list[ShapeObject]:
    """The target's objects the edit leaves alone."""
    skip = set() if edit.kind == "remove" else {edit.object, edit.other}
    return [o for i, o in enumerate(edit.target.objects) if i not in skip]


def _edited(edit: Edit) -> tuple[list[ShapeObject], list[ShapeObject]]:
    """The edited objects as they are in the source and in the target."""
    indices = [edit.object] + ([edit.other] if edit.other is not None else [])
    if edit.kind == "add":
        return [], [edit.target.objects[edit.object]]
    if edit.kind == "remove":
        return [edit.source.objects[edit.object]], []
    return [edit.source.objects[i] for i in indices], [edit.target.objects[i] for i in indices]


def _edit_done(edit: Edit, found: list[ShapeObject], tolerance: int) -> bool:
    before, after = _edited(edit)
    if edit.kind == "add":
        return any(d.name == after[0].name for d in found)
    if edit.kind == "remove":
        return not any(d.name == before[0].name for d in found)
    return all(any(near(d, want, tolerance) for d in found) for want in after)


def _why_missing(want: ShapeObject, found: list[ShapeObject], tolerance: int, placed: bool = True) -> str:
    """Why ``want`` has no detection ``near`` it: the first of ``place`` (its name elsewhere), ``shape`` / ``colour``
    (the other attribute right at its place, within its size plus ``tolerance``; anywhere when not ``placed``),
    ``missing``."""
    if placed and any(d.name == want.name for d in found):
        return "place"
    at = [d for d in found if not placed or _offset(d, want) <= want.size + tolerance]
    if any(d.colour == want.colour and d.shape != want.shape for d in at):
        return "shape"
    if any(d.shape == want.shape and d.colour != want.colour for d in at):
        return "colour"
    return "missing"


def _edit_failure(edit: Edit, found: list[ShapeObject], tolerance: int) -> str:
    """Why a failed edit failed (``_edit_done`` was False)."""
    before, after = _edited(edit)
    if edit.kind == "remove":
        return "not removed"
    if edit.kind == "add":
        return _why_missing(after[0], found, tolerance, placed=False)
    want = next(w for w in after if not any(near(d, w, tolerance) for d in found))
    return _why_missing(want, found, tolerance)


def _is_edited(edit: Edit, d: ShapeObject, tolerance: int) -> bool:
    """Whether a detection beyond the kept objects can be the edited object (right or wrong)."""
    before, after = _edited(edit)
    if edit.kind == "add":
        return True
    if edit.kind == "recolour":  # any colour at its place
        return d.shape == before[0].shape and _offset(d, before[0]) <= before[0].size + tolerance
    return d.name in {o.name for o in before + after}  # moved, swapped or not removed: named as it was


def _region(objects: list[ShapeObject], shape: tuple[int, int], margin: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        mask[max(0, y0 - margin) : y1 + margin + 1, max(0, x0 - margin) : x1 + margin + 1] = True
    return mask


def score_edit(
    image: np.ndarray, edit: Edit, tolerance: int = TOLERANCE, pixel_threshold: float = PIXEL_THRESHOLD
) -> EditResult:
    """Score one produced uint8 ``[H, W, 3]`` image (``geneval.to_uint8`` converts [-1, 1] tensors)."""
    if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3:
        raise ValueError(f"expected a square uint8 [H, W, 3] image, got {image.shape}")
    found = detect_objects(image)
    before, after = _edited(edit)
    left = list(found)
    kept, why = True, None
    for want in _others(edit):
        match = next((d for d in left if near(d, want, tolerance)), None)
        if match is None and why is None:
            why = _why_missing(want, found, tolerance)
        kept &= match is not None
        if match is not None:
            left.remove(match)
    edited = [d for d in left if _is_edited(edit, d, tolerance)][: max(1, len(after))]
    if kept and len(edited) != len(left):
        stray = [d for d in left if d not in edited]
        placed = edit.kind != "add"
        misdrawn = all(
            any(d.colour == w.colour and (not placed or _offset(d, w) <= w.size + tolerance) for w in after)
            for d in stray
        )
        why = "edited shape" if misdrawn and after else "extra"
    kept &= len(edited) == len(left)
    target = np.asarray(render(edit.target, image.shape[0]), dtype=np.float32)
    outside = ~_region(before + after + edited, image.shape[:2], margin=1)
    diff = np.abs(image.astype(np.float32) - target)[outside]
    distance = float(diff.mean()) if diff.size else 0.0
    done = _edit_done(edit, found, tolerance)
    preserved = kept and distance <= pixel_threshold
    if kept and not preserved:
        why = "pixels"
    failure = None if done else _edit_failure(edit, found, tolerance)
    return EditResult(edit.kind, done, kept, distance, preserved, failure, why)


def score_edits(
    images: Sequence[np.ndarray],
    edits: Sequence[Edit],
    tolerance: int = TOLERANCE,
    pixel_threshold: float = PIXEL_THRESHOLD,
) -> dict[str, Any]:
    """Per-image results and the rates of ``edit``, ``preservation`` and ``both`` (each ``{rate, n, ci}``, a
    Wilson 95 % interval), overall and per kind, with the mean ``pixel_distance`` and ``failures``: how many
    images failed each measure for each reason (``EDIT_FAILURES``, ``PRESERVATION_FAILURES``)."""
    if len(images) != len(edits):
        raise ValueError(f"got {len(images)} images but {len(edits)} edits")
    results = [score_edit(im, e, tolerance, pixel_threshold) for im, e in zip(images, edits, strict=True)]

    def rates(rows: list[EditResult]) -> dict[str, Any]:
        n = len(rows)
        return {
            "edit": rate(sum(r.edit for r in rows), n),
            "preservation": rate(sum(r.preservation for r in rows), n),
            "both": rate(sum(r.edit and r.preservation for r in rows), n),
            "pixel_distance": float(np.mean([r.pixel_distance for r in rows])) if rows else None,
            "failures": {
                measure: {why: sum(getattr(r, f"{measure}_failure") == why for r in rows) for why in reasons}
                for measure, reasons in (("edit", EDIT_FAILURES), ("preservation", PRESERVATION_FAILURES))
            },
        }

    kinds = sorted({r.kind for r in results})
    per_kind = {k: rates([r for r in results if r.kind == k]) for k in kinds}
    settings = {"tolerance": tolerance, "pixel_threshold": pixel_threshold}
    return {**rates(results), "per_kind": per_kind, **settings, "results": [asdict(r) for r in results]}
