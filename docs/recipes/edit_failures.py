"""What happens to the objects an edit must leave alone (docs/editing.md, eleventh round).

    OMP_NUM_THREADS=1 python docs/recipes/edit_failures.py RUN [--split val|test] [--strength S]

Re-makes the run's edits exactly as ``unimm eval RUN --split SPLIT`` does (first 500 edits, eval seed 0, the run's
sampling settings; ``--strength`` sets ``sample.edit_strength``) and, for every edit whose source has another
object besides the edited one, reads back that other object with ``detect_objects``: kept (its colour and shape
within the scorer's tolerance of its place), or what became of it. A recolour that also recolours it, a move
that also moves it by the same offset, a remove that also removes it: the instruction applied to the whole
scene, not to the object it names. Prints one markdown table per edit kind.

Then why each failed preservation failed, per kind (``why``): another object lost or changed; the edited object
also left where it was (a move or swap that copies instead of moving); some other extra object; or the objects
right and only the pixels outside the edited region off (``PIXEL_THRESHOLD``). ``--sample`` passes sampling
settings as ``unimm eval --sample`` does (for example ``edit_keep=0.1``).
"""

from __future__ import annotations

import argparse
import collections

from unimm.config import with_sampling
from unimm.data.edits import load_edits
from unimm.data.shapes import ShapeObject, detect_objects
from unimm.eval.editing import _to_stored, evaluate_edits
from unimm.eval.edits import TOLERANCE, _edited, _others, near, score_edit
from unimm.models import UnifiedModel

NEAR = 3  # pixels: a detection this close to the other object's centre is "at its place"


def fate(kind: str, other: ShapeObject, before: ShapeObject, after: ShapeObject | None, found) -> str:
    """What became of ``other`` in an edit of ``kind`` that changed ``before`` into ``after``."""
    if any(near(d, other, TOLERANCE) for d in found):
        return "kept"
    at = [d for d in found if max(abs(d.centre[0] - other.centre[0]), abs(d.centre[1] - other.centre[1])) <= NEAR]
    if kind == "recolour" and at and at[0].colour == after.colour and at[0].shape == other.shape:
        return "recoloured to the edit's colour"
    if kind == "move":
        dx, dy = after.centre[0] - before.centre[0], after.centre[1] - before.centre[1]
        shifted = (other.centre[0] + dx, other.centre[1] + dy)
        same = [d for d in found if d.name == other.name]
        if any(max(abs(d.centre[0] - shifted[0]), abs(d.centre[1] - shifted[1])) <= NEAR for d in same):
            return "moved by the edit's offset"
    if at:
        return "at its place, another colour or shape"
    return "gone" if kind == "remove" else "gone from its place"


def why(edit, found) -> str:
    """Why an edit whose preservation failed failed: the first of lost others, a copy left behind, an extra object,
    pixels only."""
    left = list(found)
    for want in _others(edit):
        match = next((d for d in left if near(d, want, TOLERANCE)), None)
        if match is None:
            return "another object lost or changed"
        left.remove(match)
    before, after = _edited(edit)
    if edit.kind in ("move", "swap") and any(near(d, b, TOLERANCE) for b in before for d in left):
        return "the edited object also left where it was"
    if len(left) > max(1, len(after)):
        return "an extra object"
    return "pixels only"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--strength", type=float, default=None, help="sample.edit_strength (default: the run's)")
    p.add_argument("--sample", action="append", default=[], help="KEY=VALUE sampling settings, as unimm eval")
    args = p.parse_args()
    model = UnifiedModel.from_pretrained(args.run)
    if args.strength is not None:
        with_sampling(model.cfg, [f"edit_strength={args.strength}"])
    if args.sample:
        with_sampling(model.cfg, args.sample)
    result = evaluate_edits(model, "quick", seed=0, split=args.split)
    edits = load_edits(model.cfg.data.path, args.split)[: len(result["_edited"])]
    images = _to_stored(result["_edited"], edits[0].target.shape[0])
    fates: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    causes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for image, loaded in zip(images, edits, strict=True):
        edit = loaded.edit
        if not score_edit(image, edit).preservation:
            causes[edit.kind][why(edit, detect_objects(image))] += 1
        before, after = _edited(edit)
        if edit.kind not in ("recolour", "move", "remove") or not before:
            continue
        found = detect_objects(image)
        for other in _others(edit):
            fates[edit.kind][fate(edit.kind, other, before[0], after[0] if after else None, found)] += 1
    scores = result["editing"]
    print(f"{args.run}, {args.split} edits: edit {scores['edit']['rate']:.1%}, preservation "
          f"{scores['preservation']['rate']:.1%}")  # fmt: skip
    for kind, counts in fates.items():
        total = sum(counts.values())
        print(f"\n{kind}: {total} other objects\n\n| what became of it | objects | share |\n|---|---:|---:|")
        for what, n in counts.most_common():
            print(f"| {what} | {n} | {n / total:.0%} |")
    print("\nwhy preservation failed\n\n| edit kind | failed | cause | edits |\n|---|---:|---|---:|")
    for kind, counts in sorted(causes.items()):
        for what, n in counts.most_common():
            print(f"| {kind} | {sum(counts.values())} | {what} | {n} |")


if __name__ == "__main__":
    main()
