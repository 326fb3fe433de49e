"""A generated compositional dataset of coloured shapes whose ground truth is exact.

Each image (default 32x32 RGB, white background) holds one or two flat-coloured objects. Captions are
``"a red circle"``, ``"a red circle left of a blue square"`` or ``"two green triangles"``; the scene
(shape, colour, centre, half-size of every object and the stated relation) goes in the row meta so
GenEval-style scoring can check colour, shape, count and relative position. ``detect_objects`` reads
the objects back from pixels.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 50, 170),
    "orange": (245, 130, 20),
}
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("left of", "right of", "above", "below")
BACKGROUND = (255, 255, 255)
_NUMBERS = {1: "a", 2: "two"}


@dataclass(frozen=True)
class ShapeObject:
    """One object: ``centre`` is (x, y) in pixels, ``size`` the half-extent of its bounding box."""

    shape: str
    colour: str
    centre: tuple[int, int]
    size: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Inclusive pixel box (x0, y0, x1, y1)."""
        x, y = self.centre
        return x - self.size, y - self.size, x + self.size, y + self.size

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "colour": self.colour, "centre": list(self.centre), "size": self.size}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> ShapeObject:
        return cls(row["shape"], row["colour"], (int(row["centre"][0]), int(row["centre"][1])), int(row["size"]))


def relation_holds(a: ShapeObject, b: ShapeObject, relation: str, gap: int = 0) -> bool:
    """Whether ``a`` is ``relation`` ``b``: along that axis the boxes are at least ``gap`` pixels apart
    and the centres differ more than along the other axis."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    dx, dy = b.centre[0] - a.centre[0], b.centre[1] - a.centre[1]
    if relation == "left of":
        return ax1 + gap < bx0 and abs(dx) > abs(dy)
    if relation == "right of":
        return bx1 + gap < ax0 and abs(dx) > abs(dy)
    if relation == "above":
        return ay1 + gap < by0 and abs(dy) > abs(dx)
    if relation == "below":
        return by1 + gap < ay0 and abs(dy) > abs(dx)
    raise ValueError(f"unknown relation {relation!r}")


@dataclass(frozen=True)
class ShapeScene:
    """One or two objects; ``relation`` (of object 0 to object 1) is None for one object or a count."""

    objects: tuple[ShapeObject, ...]
    relation: str | None = None

    def caption(self) -> str:
        """The exact caption of the scene."""
        first = self.objects[0]
        if len(self.objects) == 1:
            return f"a {first.name}"
        if self.relation is None:  # two identical objects: a counting caption
            return f"two {first.name}s"
        return f"a {first.name} {self.relation} a {self.objects[1].name}"

    def to_meta(self) -> dict[str, Any]:
        return {
            "objects": [obj.to_dict() for obj in self.objects],
            "count": len(self.objects),
            "relation": self.relation,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ShapeScene:
        return cls(tuple(ShapeObject.from_dict(row) for row in meta["objects"]), meta.get("relation"))


def class_names() -> list[str]:
    """Every "colour shape" pair; a one-object scene is labelled by its pair's index."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def scene_label(scene: ShapeScene) -> int:
    """Index into ``class_names()`` for a one-object scene, -1 otherwise."""
    if len(scene.objects) != 1:
        return -1
    return class_names().index(scene.objects[0].name)


def parse_caption(text: str) -> tuple[list[tuple[str, str]], str | None]:
    """Parse a caption (or prompt) into ([(colour, shape), ...], relation); ``ValueError`` if unknown."""
    colours, shapes = "|".join(COLOURS), "|".join(SHAPES)
    text = text.lower().strip().rstrip(".")
    single = rf"(?:a|an) ({colours}) ({shapes})"
    if m := re.fullmatch(single, text):
        return [(m[1], m[2])], None
    if m := re.fullmatch(rf"two ({colours}) ({shapes})s", text):
        return [(m[1], m[2])] * 2, None
    relations = "|".join(RELATIONS)
    if m := re.fullmatch(rf"{single} ({relations}) {single}", text):
        return [(m[1], m[2]), (m[4], m[5])], m[3]
    raise ValueError(f"not a shapes caption: {text!r}")


def _place(rng: random.Random, size: int, image_size: int) -> tuple[int, int]:
    margin = size + 1  # keep one white pixel between the object and the border
    return rng.randint(margin, image_size - 1 - margin), rng.randint(margin, image_size - 1 - margin)


def sample_scene(rng: random.Random, image_size: int = 32, p_two: float = 0.5, p_count: float = 0.2) -> ShapeScene:
    """Draw a scene: one object, or (prob ``p_two``) two objects in a relation or (``p_count``) a pair."""
    names = list(COLOURS)
    if rng.random() >= p_two:
        size = rng.randint(max(2, int(image_size * 0.15)), max(3, int(image_size * 0.3)))
        obj = ShapeObject(rng.choice(SHAPES), rng.choice(names), _place(rng, size, image_size), size)
        return ShapeScene((obj,))
    same = rng.random() < p_count
    first = (rng.choice(SHAPES), rng.choice(names))
    second = first
    while not same and second == first:
        second = (rng.choice(SHAPES), rng.choice(names))
    relation = rng.choice(RELATIONS)
    lo, hi = max(2, int(image_size * 0.1)), max(3, int(image_size * 0.2))
    while True:  # rejection sampling; a valid layout is found within a few tries
        sizes = rng.randint(lo, hi), rng.randint(lo, hi)
        a = ShapeObject(*first, _place(rng, sizes[0], image_size), sizes[0])
        b = ShapeObject(*second, _place(rng, sizes[1], image_size), sizes[1])
        if relation_holds(a, b, relation, gap=2):  # white pixels between, so objects never touch
            return ShapeScene((a, b), None if same else relation)


def render(scene: ShapeScene, image_size: int = 32) -> Image.Image:
    """Draw the scene without anti-aliasing, so every object pixel has its exact palette colour."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        fill = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(obj.centre[0], y0), (x0, y1), (x1, y1)], fill=fill)
        else:
            raise ValueError(f"unknown shape {obj.shape!r}")
    return image


def generate(n: int, seed: int = 0, image_size: int = 32) -> Iterator[tuple[Image.Image, ShapeScene]]:
    """``n`` (image, scene) pairs, the same for the same seed."""
    rng = random.Random(seed)
    for _ in range(n):
        scene = sample_scene(rng, image_size)
        yield render(scene, image_size), scene


def palette_indices(image: np.ndarray, tolerance: float = 60.0) -> np.ndarray:
    """Each pixel of a uint8 ``[H,W,3]`` image -> 1 + the index of its nearest palette colour (``COLOURS`` order), or
    0 (background) when that colour is farther than ``tolerance``: ``[H,W]`` ints."""
    pixels = image.astype(np.float32)
    palette = np.array([BACKGROUND, *COLOURS.values()], dtype=np.float32)
    distance = np.linalg.norm(pixels[:, :, None, :] - palette[None, None], axis=-1)  # [H,W,1+K]
    nearest = distance.argmin(-1)
    nearest[distance.min(-1) > tolerance] = 0
    return nearest


def shape_of_fill(fill: float) -> str:
    """The shape a region is read as from the share of its bounding box it fills (square ~1, circle ~0.79,
    triangle ~0.5)."""
    return "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"


def detect_objects(image: np.ndarray, tolerance: float = 60.0, min_pixels: int = 4) -> list[ShapeObject]:
    """Find flat-coloured objects in a uint8 ``[H,W,3]`` image, left to right.

    Each pixel takes the nearest palette colour (or background) within ``tolerance``; every connected
    region of one colour is an object whose shape comes from how much of its box it fills (square ~1,
    circle ~0.79, triangle ~0.5). Meant for rendered or well-generated images, not noisy ones.
    """
    from scipy import ndimage  # scipy comes with scikit-learn

    nearest = palette_indices(image, tolerance)
    found: list[ShapeObject] = []
    for index, colour in enumerate(COLOURS, start=1):
        regions, count = ndimage.label(nearest == index)
        for region in range(1, count + 1):
            ys, xs = np.nonzero(regions == region)
            if len(xs) < min_pixels:
                continue
            width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
            fill = len(xs) / float(width * height)
            shape = shape_of_fill(fill)
            centre = (int(round((xs.min() + xs.max()) / 2)), int(round((ys.min() + ys.max()) / 2)))
            found.append(ShapeObject(shape, colour, centre, int(max(width, height) - 1) // 2))
    return sorted(found, key=lambda obj: (obj.centre[0], obj.centre[1]))
