"""Image-editing triples (source image, instruction, target image) on the shapes, with exact ground truth.

    python -m unimm.data.edits --out data/shape_edits --n 6000 [--seed 0] [--counterparts] [--force]

Source scene ``i`` is scene ``i`` of ``shapes.generate(n, seed)`` and keeps its split from
``split_assignment(n, seed)``: with the defaults these are the scenes and splits of ``data/shapes``. Each
scene gets one edit, drawn (seeded by (seed, i)) among the kinds that are unambiguous for it:
- ``recolour``: "make the circle blue";
- ``move``: "move the circle to the left" / "up": the centre shifts ``image_size // 4`` pixels;
- ``add``: "add a red triangle": a new (colour, shape) at a free place;
- ``remove``: "remove the circle";
- ``swap``: "swap the circle and the square": the two exchange centres.
An object is named by its shape when that is unique in the scene, else by colour and shape when that is;
a scene where neither is unique (two identical objects) gets only ``add``. Every target keeps one white
pixel to the border and two between objects, so ``detect_objects`` reads it back exactly. A train edit
whose source or target scene is also a scene of a val/test edit is dropped: held-out scenes never train (the
blank image left by removing a lone object belongs to no scene). ``--counterparts`` adds, for each train recolour,
move and remove of a scene with two or more objects, the same kind of edit of another object (``counterpart``;
numbered scene ``n + i``); the val and test edits stay the same.

Folder: ``images/<scene>-source.png``, ``images/<scene>-target.png``, ``edits.jsonl`` (one row per edit)
and ``meta.json``. ``load_edits`` reads it back, failing with one line naming the file and line.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from unimm.data import shapes
from unimm.data.formats import IMAGES_DIR, SPLITS, encode_png, make_meta, read_png, write_meta
from unimm.data.prepare import build, split_assignment
from unimm.data.shapes import ShapeObject, ShapeScene

EDIT_KINDS = ("recolour", "move", "add", "remove", "swap")
OPEN_PLACE_KINDS = ("add",)  # the instruction does not say where the edit draws ("add a red triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_MOVE_WORDS = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}
EDITS_FILE = "edits.jsonl"
GAP = 2  # white pixels kept between two objects' boxes, as ``sample_scene`` keeps them


@dataclass(frozen=True)
class Edit:
    """One edit. ``object`` indexes the edited object in the target for ``add``, in the source otherwise
    (recolour, move and swap keep the order, so it is the same index in the target); ``other`` is swap's
    second object; ``direction`` is move's."""

    kind: str
    instruction: str
    source: ShapeScene
    target: ShapeScene
    object: int
    other: int | None = None
    direction: str | None = None
    scene: int = -1
    split: str = "train"

    def to_row(self) -> dict[str, Any]:
        source_file, target_file = image_files(self)
        return {
            "scene": self.scene,
            "split": self.split,
            "kind": self.kind,
            "instruction": self.instruction,
            "object": self.object,
            "other": self.other,
            "direction": self.direction,
            "source_file": source_file,
            "target_file": target_file,
            "source": self.source.to_meta(),
            "target": self.target.to_meta(),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Edit:
        source, target = ShapeScene.from_meta(row["source"]), ShapeScene.from_meta(row["target"])
        if row["kind"] not in EDIT_KINDS or row["split"] not in SPLITS:
            raise ValueError(f"kind {row['kind']!r} or split {row['split']!r} unknown")
        edit = cls(row["kind"], row["instruction"], source, target, int(row["object"]), scene=int(row["scene"]))
        edit = replace(edit, other=row.get("other"), direction=row.get("direction"), split=row["split"])
        if [row.get("source_file"), row.get("target_file")] != list(image_files(edit)):
            raise ValueError(f"image files should be {image_files(edit)}")
        holder = target if edit.kind == "add" else source
        for index in (edit.object, edit.other):
            if index is not None and not 0 <= index < len(holder.objects):
                raise ValueError(f"object index {index} is not in the scene")
        return edit


def move_step(image_size: int = 32) -> int:
    """Pixels a ``move`` shifts the object's centre."""
    return image_size // 4


def reference(objects: tuple[ShapeObject, ...], index: int) -> str | None:
    """The shortest unambiguous name of ``objects[index]``: its shape, else colour and shape, else None."""
    obj = objects[index]
    if sum(o.shape == obj.shape for o in objects) == 1:
        return obj.shape
    if sum(o.name == obj.name for o in objects) == 1:
        return obj.name
    return None


def fits(objects: tuple[ShapeObject, ...], image_size: int = 32) -> bool:
    """Every box inside the image with a white pixel to spare, and every two boxes ``GAP`` pixels apart."""
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        if min(x0, y0) < 1 or max(x1, y1) > image_size - 2:
            return False
    for i, a in enumerate(objects):
        for b in objects[i + 1 :]:
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.box, b.box
            if not (ax1 + GAP < bx0 or bx1 + GAP < ax0 or ay1 + GAP < by0 or by1 + GAP < ay0):
                return False
    return True


def scene_of(objects: tuple[ShapeObject, ...]) -> ShapeScene:
    """A scene of ``objects``; for two different objects the relation is the first of ``RELATIONS`` that holds."""
    relation = None
    if len(objects) == 2 and objects[0].name != objects[1].name:
        relation = next((r for r in shapes.RELATIONS if shapes.relation_holds(*objects, r)), None)
    return ShapeScene(objects, relation)


def scene_key(scene: ShapeScene) -> tuple:
    """The scene's objects as an order-free key: two scenes with the same key render the same pixels."""
    return tuple(sorted((o.shape, o.colour, o.centre, o.size) for o in scene.objects))


# --------------------------------------------------------------------------------------------- the kinds


def _recolour(rng: random.Random, objs: tuple[ShapeObject, ...], size: int, index: int | None = None) -> Edit | None:
    index = rng.randrange(len(objs)) if index is None else index
    ref = reference(objs, index)
    names = {o.name for i, o in enumerate(objs) if i != index}
    colours = [c for c in shapes.COLOURS if c != objs[index].colour and f"{c} {objs[index].shape}" not in names]
    if ref is None or not colours:
        return None
    colour = rng.choice(colours)
    target = objs[:index] + (replace(objs[index], colour=colour),) + objs[index + 1 :]
    return Edit("recolour", f"make the {ref} {colour}", scene_of(objs), scene_of(target), index)


def _move(rng: random.Random, objs: tuple[ShapeObject, ...], size: int, index: int | None = None) -> Edit | None:
    index = rng.randrange(len(objs)) if index is None else index
    ref, step, obj = reference(objs, index), move_step(size), objs[index]
    options = []
    for direction, (dx, dy) in DIRECTIONS.items():
        moved = replace(obj, centre=(obj.centre[0] + dx * step, obj.centre[1] + dy * step))
        target = objs[:index] + (moved,) + objs[index + 1 :]
        if fits(target, size):
            options.append((direction, target))
    if ref is None or not options:
        return None
    direction, target = rng.choice(options)
    instruction = f"move the {ref} {_MOVE_WORDS[direction]}"
    return Edit("move", instruction, scene_of(objs), scene_of(target), index, direction=direction)


def _add(rng: random.Random, objs: tuple[ShapeObject, ...], size: int) -> Edit | None:
    names = {o.name for o in objs}
    pairs = [(s, c) for c in shapes.COLOURS for s in shapes.SHAPES if f"{c} {s}" not in names]
    shape, colour = rng.choice(pairs)
    lo, hi = max(2, int(size * 0.1)), max(3, int(size * 0.2))  # the two-object scenes' sizes
    for _ in range(50):
        half = rng.randint(lo, hi)
        new = ShapeObject(
            shape, colour, (rng.randint(half + 1, size - 2 - half), rng.randint(half + 1, size - 2 - half)), half
        )
        if fits((*objs, new), size):
            return Edit("add", f"add a {colour} {shape}", scene_of(objs), scene_of((*objs, new)), len(objs))
    return None


def _remove(rng: random.Random, objs: tuple[ShapeObject, ...], size: int, index: int | None = None) -> Edit | None:
    index = rng.randrange(len(objs)) if index is None else index
    ref = reference(objs, index)
    if ref is None:
        return None
    return Edit("remove", f"remove the {ref}", scene_of(objs), scene_of(objs[:index] + objs[index + 1 :]), index)


def _swap(rng: random.Random, objs: tuple[ShapeObject, ...], size: int) -> Edit | None:
    if len(objs) != 2:
        return None
    a, b = (0, 1) if rng.random() < 0.5 else (1, 0)  # which one the instruction names first
    ref_a, ref_b = reference(objs, a), reference(objs, b)
    target = (replace(objs[0], centre=objs[1].centre), replace(objs[1], centre=objs[0].centre))
    if ref_a is None or ref_b is None or not fits(target, size):
        return None
    return Edit("swap", f"swap the {ref_a} and the {ref_b}", scene_of(objs), scene_of(target), a, other=b)


_MAKERS = {"recolour": _recolour, "move": _move, "add": _add, "remove": _remove, "swap": _swap}


def make_edit(scene: ShapeScene, rng: random.Random, image_size: int = 32) -> Edit | None:
    """One edit of ``scene``: kinds are tried in a random order until one is unambiguous and fits."""
    kinds = list(EDIT_KINDS)
    rng.shuffle(kinds)
    for kind in kinds:
        edit = _MAKERS[kind](rng, scene.objects, image_size)
        if edit is not None:
            return replace(edit, source=scene)
    return None


#: the kinds that act on one object of the source, which a counterpart edit can aim at another object
COUNTERPART_KINDS = ("recolour", "move", "remove")


def counterpart(edit: Edit, rng: random.Random, image_size: int = 32) -> Edit | None:
    """The same kind of edit of the same source aimed at another of its objects (the first, in a random order,
    that can be named and edited), or None: "make the circle blue" beside "make the square red". Trained
    together, the two show that the instruction's noun decides which object changes."""
    objs = edit.source.objects
    if edit.kind not in COUNTERPART_KINDS or len(objs) < 2:
        return None
    others = [i for i in range(len(objs)) if i != edit.object]
    rng.shuffle(others)
    for index in others:
        made = _MAKERS[edit.kind](rng, objs, image_size, index)
        if made is not None:
            return replace(made, source=edit.source, split=edit.split)
    return None


def make_edits(n: int, seed: int = 0, image_size: int = 32, counterparts: bool = False) -> list[Edit]:
    """Edits of the first ``n`` shapes scenes with the shapes' splits, held-out scenes kept out of train.
    ``counterparts``: each train edit that acts on one object of a several-object scene also gets its
    :func:`counterpart`, numbered scene ``n + i`` (its source is scene ``i``'s); every other edit, and every
    val / test edit, is the one made without them."""
    splits = split_assignment(n, seed)
    edits = []
    for i, (_, scene) in enumerate(shapes.generate(n, seed, image_size)):
        edit = make_edit(scene, random.Random(f"edit {seed} {i}"), image_size)
        if edit is not None:
            edits.append(replace(edit, scene=i, split=splits[i]))
            if counterparts and splits[i] == "train":
                twin = counterpart(edit, random.Random(f"counterpart {seed} {i}"), image_size)
                if twin is not None:
                    edits.append(replace(twin, scene=n + i))
    held = {scene_key(s) for e in edits if e.split != "train" for s in (e.source, e.target)} - {()}  # blank: free
    return [e for e in edits if e.split != "train" or not {scene_key(e.source), scene_key(e.target)} & held]


# ------------------------------------------------------------------------------------------ read, write


class LoadedEdit(NamedTuple):
    """An edit with its stored uint8 ``[H, W, 3]`` source and target images."""

    edit: Edit
    source: np.ndarray
    target: np.ndarray


def image_files(edit: Edit) -> tuple[str, str]:
    """Relative paths of the source and target PNGs."""
    return f"{IMAGES_DIR}/{edit.scene:06d}-source.png", f"{IMAGES_DIR}/{edit.scene:06d}-target.png"


def write_edits(root: str | Path, edits: list[Edit], image_size: int = 32, source: str = "") -> None:
    """Write the folder: the PNG pairs, ``edits.jsonl`` and ``meta.json`` (byte-identical on reruns)."""
    root = Path(root)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    lines = []
    for edit in edits:
        for file, scene in zip(image_files(edit), (edit.source, edit.target), strict=True):
            (root / file).write_bytes(encode_png(shapes.render(scene, image_size)))
        lines.append(json.dumps(edit.to_row()) + "\n")
    (root / EDITS_FILE).write_text("".join(lines), encoding="utf-8")
    counts = {split: sum(e.split == split for e in edits) for split in SPLITS}
    kinds = {kind: sum(e.kind == kind for e in edits) for kind in EDIT_KINDS}
    write_meta(root, make_meta("edits", "shape_edits", None, "edit", source=source, counts=counts, kinds=kinds))


def load_edits(root: str | Path, split: str | None = None) -> list[LoadedEdit]:
    """Read a folder written by ``write_edits`` (optionally one split); ``ValueError`` naming file and line
    for a malformed row and a missing or undecodable image."""
    path = Path(root) / EDITS_FILE
    out = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                edit = Edit.from_row(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: invalid JSON ({err})") from err
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
                raise ValueError(f"{where}: malformed edit row ({type(err).__name__}: {err})") from err
            if split is not None and edit.split != split:
                continue
            images = []
            for file in image_files(edit):  # the names the row states, checked by ``from_row``
                try:
                    images.append(read_png(Path(root) / file))
                except FileNotFoundError:
                    raise ValueError(f"{where}: missing image {file}") from None
                except ValueError as err:
                    raise ValueError(f"{where}: corrupt image {file}") from err
            out.append(LoadedEdit(edit, *images))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/shape_edits"), help="output dir")
    parser.add_argument("--n", type=int, default=6000, help="source scenes (one edit each, at most)")
    parser.add_argument("--seed", type=int, default=0, help="shapes seed (0: the scenes of data/shapes)")
    parser.add_argument("--image-size", type=int, default=32, help="image side in pixels")
    help_twin = "give each one-object train edit of a several-object scene a counterpart edit"
    parser.add_argument("--counterparts", action="store_true", help=help_twin)
    parser.add_argument("--force", action="store_true", help="rebuild if it exists")
    args = parser.parse_args(argv)
    edits = make_edits(args.n, args.seed, args.image_size, args.counterparts)
    source = f"unimm.data.edits seed={args.seed} n={args.n} image_size={args.image_size}"
    source += " counterparts" if args.counterparts else ""
    if build(args.out.parent, args.out.name, lambda t: write_edits(t, edits, args.image_size, source), args.force):
        counts = ", ".join(f"{k}={sum(e.kind == k for e in edits)}" for k in EDIT_KINDS)
        print(f"{len(edits)} edits of {args.n} scenes ({counts}) -> {args.out}")


if __name__ == "__main__":
    main()
