"""Moving MNIST: clips of real MNIST digits moving in straight lines and bouncing off the walls, exact truth.

    python -m unimm.data.video --out data/moving_mnist --mnist data/mnist --clips 2000 [--seed 0] [--diagonal]

The clips of a split use only the digits of the same split of the digit dataset (``data/mnist``), so no
test digit is ever seen in a training clip. A digit is cropped to its ink and scaled so its longer side is
``digit_size``; it starts at a drawn position and moves ``speed`` px per frame in a drawn direction,
reflecting off a wall it would cross. The truth of each clip (digit classes, source indices, positions and
centres of mass per frame, direction segments, bounce frame) goes with it; captions and questions are
made from the truth (``video_text.py``). The same seed gives byte-identical clips.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unimm.data.directions import AXIAL, DIAGONAL, DIRECTIONS, direction_of, segments
from unimm.data.formats import SPLITS, read_idx_split, read_meta


@dataclass(frozen=True)
class VideoConfig:
    """How clips are drawn: ``frames`` of ``size`` x ``size``, 1 digit (2 with prob ``p_two``)."""

    frames: int = 8
    size: int = 32
    digit_size: int = 16
    speeds: tuple[int, ...] = (1, 2, 3)
    diagonal: bool = False
    p_two: float = 0.0
    p_bounce: float = 0.5

    def __post_init__(self) -> None:
        if not self.speeds or min(self.speeds) < 1:
            raise ValueError(f"speeds must be positive integers, got {self.speeds}")
        if self.digit_size + 2 * max(self.speeds) > self.size:
            raise ValueError(
                f"digit_size {self.digit_size} + 2 x speed {max(self.speeds)} must fit in size {self.size}"
            )
        if self.frames < (5 if self.p_bounce > 0 else 2):
            raise ValueError(f"frames must be >= 5 for bounces (>= 2 without), got {self.frames}")
        if not (0.0 <= self.p_two <= 1.0 and 0.0 <= self.p_bounce <= 1.0):
            raise ValueError("p_two and p_bounce must lie in [0, 1]")

    @property
    def directions(self) -> tuple[str, ...]:
        return AXIAL + DIAGONAL if self.diagonal else AXIAL


@dataclass(frozen=True)
class DigitTrack:
    """One digit of a clip: ``positions`` are the (x, y) top-left of its ``box`` (w, h) per frame,
    ``centres`` its intensity centre of mass (x, y) per frame, ``directions`` the straight segments of
    its path and ``bounce_frame`` the first frame that does not go on in the first direction."""

    label: int
    source_index: int
    velocity: tuple[int, int]
    box: tuple[int, int]
    positions: tuple[tuple[int, int], ...]
    centres: tuple[tuple[float, float], ...]
    directions: tuple[str, ...]
    bounce_frame: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "source_index": self.source_index,
            "velocity": list(self.velocity),
            "box": list(self.box),
            "positions": [list(p) for p in self.positions],
            "centres": [list(c) for c in self.centres],
            "directions": list(self.directions),
            "bounce_frame": self.bounce_frame,
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> DigitTrack:
        return cls(
            int(row["label"]),
            int(row["source_index"]),
            (int(row["velocity"][0]), int(row["velocity"][1])),
            (int(row["box"][0]), int(row["box"][1])),
            tuple((int(x), int(y)) for x, y in row["positions"]),
            tuple((float(x), float(y)) for x, y in row["centres"]),
            tuple(row["directions"]),
            row["bounce_frame"],
        )


def sprite(image: np.ndarray, digit_size: int) -> np.ndarray:
    """A digit image cropped to its ink and scaled (bilinear) so its longer side is ``digit_size``."""
    ys, xs = np.nonzero(image)
    if not len(xs):
        raise ValueError("a digit image with no ink")
    ink = image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    scale = digit_size / max(ink.shape)
    height, width = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    return np.asarray(Image.fromarray(ink).resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


@lru_cache(maxsize=4096)
def axis_motion(start: int, velocity: int, limit: int, frames: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(positions along one axis in [0, limit], frames at which it reflected off an end); ``limit >= |velocity|``."""
    path, walls, position = [start], [], start
    for frame in range(1, frames):
        position += velocity
        if position < 0 or position > limit:
            position, velocity = (-position if position < 0 else 2 * limit - position), -velocity
            walls.append(frame)
        path.append(position)
    return tuple(path), tuple(walls)


def axis_path(start: int, velocity: int, limit: int, frames: int) -> tuple[int, ...]:
    """Positions along one axis, reflecting off either end."""
    return axis_motion(start, velocity, limit, frames)[0]


def path_segments(positions: tuple[tuple[int, int], ...]) -> tuple[list[str], list[int]]:
    """``segments`` of a path of (x, y) positions."""
    steps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(positions, positions[1:], strict=False)]
    return segments(steps)


@lru_cache(maxsize=4096)
def valid_starts(
    limits: tuple[int, int], velocity: tuple[int, int], frames: int, bounce: bool
) -> tuple[tuple[int, int], ...]:
    """Starts whose path never touches a wall (``bounce`` False) or hits one once (two at once in a corner),
    with at least two steps on in the first direction before the change and one step after it, so both
    segments show. An axis that does not move starts at 0."""
    found = []
    for x in range(limits[0] + 1) if velocity[0] else (0,):
        for y in range(limits[1] + 1) if velocity[1] else (0,):
            (xs, x_walls), (ys, y_walls) = (
                axis_motion(x, velocity[0], limits[0], frames),
                axis_motion(y, velocity[1], limits[1], frames),
            )
            if len(set(x_walls) | set(y_walls)) != bounce:  # one wall hit (both at once in a corner) or none
                continue
            names, changes = path_segments(tuple(zip(xs, ys, strict=True)))
            if names[0] != direction_of(velocity):  # a first step off a wall would look like the other way
                continue
            if not bounce and not changes:
                found.append((x, y))
            elif bounce and len(changes) == 1 and len(names) == 2 and 3 <= changes[0] <= frames - 2:
                found.append((x, y))
    return tuple(found)


def draw_track(rng: np.random.Generator, digit: np.ndarray, label: int, index: int, cfg: VideoConfig) -> DigitTrack:
    """A path for one sprite: direction, speed, bounce or not, then a start that gives that."""
    height, width = digit.shape
    limits = (cfg.size - width, cfg.size - height)
    bounce = bool(rng.random() < cfg.p_bounce)
    if not any(  # else the loop below would draw forever (a canvas too small for this digit's path)
        valid_starts(limits, (DIRECTIONS[d][0] * s, DIRECTIONS[d][1] * s), cfg.frames, bounce)
        for d in cfg.directions
        for s in cfg.speeds
    ):
        raise ValueError(
            f"a {width}x{height} px digit has no {'bouncing' if bounce else 'straight'} path of {cfg.frames} "
            f"frames at speeds {cfg.speeds} on a {cfg.size} px canvas: use a larger size, a smaller digit_size, "
            "fewer frames or lower speeds"
        )
    while True:  # a direction/speed with no valid start (rare) is drawn again
        direction = cfg.directions[rng.integers(len(cfg.directions))]
        speed = int(cfg.speeds[rng.integers(len(cfg.speeds))])
        velocity = (DIRECTIONS[direction][0] * speed, DIRECTIONS[direction][1] * speed)
        starts = valid_starts(limits, velocity, cfg.frames, bounce)
        if starts:
            break
    x, y = starts[rng.integers(len(starts))]
    x = x if velocity[0] else int(rng.integers(limits[0] + 1))
    y = y if velocity[1] else int(rng.integers(limits[1] + 1))
    positions = tuple(
        zip(
            axis_path(x, velocity[0], limits[0], cfg.frames),
            axis_path(y, velocity[1], limits[1], cfg.frames),
            strict=True,
        )
    )
    weights = digit.astype(np.float64)
    offset = (
        (weights.sum(0) * np.arange(width)).sum() / weights.sum(),
        (weights.sum(1) * np.arange(height)).sum() / weights.sum(),
    )
    centres = tuple((round(px + offset[0], 4), round(py + offset[1], 4)) for px, py in positions)
    names, changes = path_segments(positions)
    return DigitTrack(
        label, index, velocity, (width, height), positions, centres, tuple(names), changes[0] if changes else None
    )


def render(sprites: list[np.ndarray], tracks: list[DigitTrack], frames: int, size: int) -> np.ndarray:
    """uint8 ``[T, H, W]``: every sprite at its position, overlaps kept at the brighter pixel."""
    clip = np.zeros((frames, size, size), dtype=np.uint8)
    for digit, track in zip(sprites, tracks, strict=True):
        height, width = digit.shape
        for t, (x, y) in enumerate(track.positions):
            np.maximum(clip[t, y : y + height, x : x + width], digit, out=clip[t, y : y + height, x : x + width])
    return clip


def make_clip(
    rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, cfg: VideoConfig
) -> tuple[np.ndarray, list[DigitTrack]]:
    """One clip and its tracks, with digits drawn from ``images`` (one split of the digit dataset)."""
    count = 2 if rng.random() < cfg.p_two else 1
    sprites, tracks = [], []
    for _ in range(count):
        index = int(rng.integers(len(images)))
        sprites.append(sprite(images[index], cfg.digit_size))
        tracks.append(draw_track(rng, sprites[-1], int(labels[index]), index, cfg))
    return render(sprites, tracks, cfg.frames, cfg.size), tracks


def generate(
    images: np.ndarray, labels: np.ndarray, count: int, cfg: VideoConfig, seed: int = 0, split: str = "train"
) -> Iterator[tuple[np.ndarray, list[DigitTrack]]]:
    """``count`` clips from one split's digits; clip i depends only on (seed, split, i)."""
    for index in range(count):
        yield make_clip(np.random.default_rng([seed, SPLITS.index(split), index]), images, labels, cfg)


def split_counts(count: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, int]:
    """Clips per split: ``count`` cut 80/10/10 (val and test rounded, train the rest)."""
    val, test = round(count * fractions[1]), round(count * fractions[2])
    return {"train": count - val - test, "val": val, "test": test}


def write_moving_mnist(target: Path, mnist: Path, count: int, cfg: VideoConfig, seed: int = 0) -> dict[str, Any]:
    """Write the dataset to ``target`` from the digit dataset ``mnist``; returns its meta."""
    from unimm.data.video_store import VideoWriter
    from unimm.data.video_text import clip_text

    source = read_meta(mnist)
    names = source.get("class_names")
    if source["format"] != "idx" or not names:
        raise ValueError(f"{mnist}: Moving MNIST needs a labelled IDX digit dataset with class names")
    counts = split_counts(count)
    writer = VideoWriter(target, cfg.frames, cfg.size)
    for split in SPLITS:
        images, labels = read_idx_split(mnist, split)
        for clip, tracks in generate(images, labels, counts[split], cfg, seed, split):
            writer.add(split, clip, *clip_text(tracks, names), {"digits": [t.to_dict() for t in tracks]})
    generator = {"seed": seed, "clips": count, **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}
    origin = f"{source.get('name', mnist.name)} ({source.get('source', 'no source')})"
    meta = writer.finish("moving_mnist", names, source=f"unimm.data.video from {origin}", generator=generator)
    return meta


def main(argv: list[str] | None = None) -> None:
    from unimm.data.prepare import build

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/moving_mnist"), help="dataset dir to write")
    parser.add_argument("--mnist", type=Path, default=Path("data/mnist"), help="IDX digit dataset (make data)")
    parser.add_argument("--clips", type=int, default=2000, help="clips in all, split 80/10/10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--digit-size", type=int, default=16, help="longer side of a digit, px")
    parser.add_argument("--speeds", default="1,2,3", help="speeds in px/frame, comma-separated")
    parser.add_argument("--diagonal", action="store_true", help="also move diagonally")
    parser.add_argument("--two-digit-fraction", type=float, default=0.0, help="share of clips with two digits")
    parser.add_argument("--bounce-fraction", type=float, default=0.5, help="share of digits that bounce once")
    parser.add_argument("--force", action="store_true", help="replace a dataset already at --out")
    args = parser.parse_args(argv)
    speeds = tuple(int(s) for s in args.speeds.split(",") if s.strip())
    cfg = VideoConfig(
        args.frames, args.size, args.digit_size, speeds, args.diagonal, args.two_digit_fraction, args.bounce_fraction
    )
    if build(
        args.out.parent,
        args.out.name,
        lambda t: write_moving_mnist(t, args.mnist, args.clips, cfg, args.seed),
        args.force,
    ):
        print(f"wrote {args.clips} clips to {args.out}")


if __name__ == "__main__":
    main()
