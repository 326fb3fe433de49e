"""Directions of motion in an image (y grows downwards) and the rule that cuts a path into straight segments.

The rule is the definition both the video generator's ground truth (from exact positions) and the motion
metric (from pixels) use, so "moving down, then bouncing up" means the same thing on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence

AXIAL = ("left", "right", "up", "down")
DIAGONAL = ("up-left", "up-right", "down-left", "down-right")
STATIC = "static"
# unit step (dx, dy) of each direction, in pixels; y points down as in an image array
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "up-left": (-1, -1),
    "up-right": (1, -1),
    "down-left": (-1, 1),
    "down-right": (1, 1),
}
_BY_SIGNS = {signs: name for name, signs in DIRECTIONS.items()}


def _sign(value: float, min_step: float) -> int:
    return 0 if abs(value) < min_step else (1 if value > 0 else -1)


def direction_of(step: Sequence[float], min_step: float = 0.5) -> str:
    """The direction name of one step ``(dx, dy)``; an axis moving less than ``min_step`` counts as still."""
    signs = (_sign(step[0], min_step), _sign(step[1], min_step))
    return _BY_SIGNS.get(signs, STATIC)


def segments(steps: Sequence[Sequence[float]], min_step: float = 0.5) -> tuple[list[str], list[int]]:
    """Cut a path into straight segments: (direction of each segment, frame of each change).

    ``steps[t]`` is the move from frame t to frame t+1. A change is the first step that does not go on in
    the current direction (a bounce: slower, still or reversed); the frame it leads to is the change's
    frame, and the step after it gives the next segment's direction (the step of the change itself is
    partial, so it is not read). A change in the last step ends the path with no further segment.
    """
    if not steps:
        return [STATIC], []
    names = [direction_of(step, min_step) for step in steps]
    found, changes = [names[0]], []
    t = 1
    while t < len(names):
        if names[t] == found[-1]:
            t += 1
            continue
        changes.append(t + 1)
        if t + 1 < len(names):
            found.append(names[t + 1])
        t += 2
    return found, changes
