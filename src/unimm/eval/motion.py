"""Exact motion checks of a one-object clip from its pixels: centre of mass per frame, direction, bounce.

The object is whatever is brighter than ``threshold`` x the frame's maximum (Moving MNIST: a white digit on
black); its intensity-weighted centre per frame gives the steps of its path, which ``segments`` (the rule
the dataset's truth is made with) cuts into straight segments. A clip "moving down, then bouncing up" has
segments ``["down", "up"]``; ``"down"`` alone checks only the first. A frame with no object or a path with
no step of at least ``min_step`` px is ``static``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from unimm.data.directions import STATIC, segments


@dataclass(frozen=True)
class Motion:
    """What a clip shows: ``centres`` float ``[T, 2]`` (x, y; NaN for an empty frame), the direction of
    each straight segment and the frame of each change (the first frame not going on as before)."""

    centres: np.ndarray
    directions: list[str]
    changes: list[int]

    @property
    def direction(self) -> str:
        """The direction of the first segment."""
        return self.directions[0]

    @property
    def bounce_frame(self) -> int | None:
        return self.changes[0] if self.changes else None


def as_frames(clip: np.ndarray | torch.Tensor) -> np.ndarray:
    """float64 ``[T, H, W]`` intensities from ``[T, H, W]`` or ``[T, 1, H, W]`` (uint8 or float, >= 0)."""
    array = clip.detach().cpu().numpy() if isinstance(clip, torch.Tensor) else np.asarray(clip)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"a clip must be [T, H, W] or [T, 1, H, W], got shape {array.shape}")
    return array.astype(np.float64)


def centres_of_mass(clip: np.ndarray | torch.Tensor, threshold: float = 0.25) -> np.ndarray:
    """float ``[T, 2]``: the (x, y) intensity-weighted centre of each frame's pixels above
    ``threshold`` x that frame's maximum; NaN for a blank frame."""
    frames = as_frames(clip)
    peak = frames.max(axis=(1, 2), keepdims=True)
    weights = np.where(frames > threshold * peak, frames, 0.0)
    total = weights.sum(axis=(1, 2))
    xs, ys = np.arange(frames.shape[2]), np.arange(frames.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (weights.sum(axis=1) * xs).sum(axis=1) / total
        cy = (weights.sum(axis=2) * ys).sum(axis=1) / total
    centres = np.stack([cx, cy], axis=1)
    centres[total <= 0] = np.nan
    return centres


def clip_motion(clip: np.ndarray | torch.Tensor, threshold: float = 0.25, min_step: float = 0.5) -> Motion:
    """The straight segments of the path of a clip's (one) object."""
    centres = centres_of_mass(clip, threshold)
    if len(centres) < 2 or np.isnan(centres).any():
        return Motion(centres, [STATIC], [])
    names, changes = segments(np.diff(centres, axis=0).tolist(), min_step)
    return Motion(centres, names, changes)


def motion_matches(motion: Motion, expected: str | Sequence[str]) -> bool:
    """A direction name checks the first segment; a list of names checks every segment."""
    if isinstance(expected, str):
        return motion.direction == expected
    return motion.directions == list(expected)


def motion_accuracy(
    clips: Sequence[np.ndarray | torch.Tensor] | torch.Tensor,
    expected_directions: Sequence[str | Sequence[str]],
    threshold: float = 0.25,
    min_step: float = 0.5,
) -> float:
    """Share of clips whose motion matches: ``"left"`` (first segment) or ``["down", "up"]`` (every segment)."""
    if len(clips) != len(expected_directions):
        raise ValueError(f"got {len(clips)} clips but {len(expected_directions)} expected directions")
    if not len(clips):
        raise ValueError("no clips to score")
    hits = [
        motion_matches(clip_motion(clip, threshold, min_step), expected)
        for clip, expected in zip(clips, expected_directions, strict=True)
    ]
    return sum(hits) / len(hits)


def frame_consistency(clip: np.ndarray | torch.Tensor, threshold: float = 0.25, tolerance: float = 0.02) -> float:
    """Share of frames after the first whose object (cropped to its pixels above ``threshold`` x the max)
    is the first frame's: same box and mean absolute difference <= ``tolerance`` of the intensity range."""
    frames = as_frames(clip)
    scale = max(float(frames.max()), 1e-12)

    def crop(frame: np.ndarray) -> np.ndarray:
        ys, xs = np.nonzero(frame > threshold * frame.max()) if frame.max() > 0 else ((), ())
        if not len(xs):
            return np.zeros((0, 0))
        return frame[min(ys) : max(ys) + 1, min(xs) : max(xs) + 1]

    first = crop(frames[0])
    same = [
        (c := crop(frame)).shape == first.shape and c.size > 0 and np.abs(c - first).mean() <= tolerance * scale
        for frame in frames[1:]
    ]
    return sum(same) / len(same) if same else 1.0
