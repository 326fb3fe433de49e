"""Check the images given to ``UnifiedModel.caption``: a clear error for the wrong type, shape or value range
(a uint8 or a [0, 1] tensor captions as nonsense, silently), a warning for images unlike the training images."""

from __future__ import annotations

import torch

from unimm.data.clips import time_shape
from unimm.data.image_stats import ImageStats

RANGE_TOLERANCE = 1e-3
DARK_BACKGROUND = -0.5  # a training background below this: every real image has pixels below 0


def check_images(
    images: torch.Tensor,
    channels: int,
    image_size: int,
    stats: ImageStats | None,
    what: str = "caption",
    frames: int | None = None,
) -> None:
    """``ValueError`` unless ``images`` are float ``[B, channels, image_size, image_size]`` in [-1, 1] (a video
    model's clips: ``[B, frames, channels, image_size, image_size]``); the message names the method ``what``
    that got them.

    With ``stats`` of black-background training images (MNIST), a batch with no pixel below 0 is taken for
    [0, 1] images and refused too.
    """
    shape = (*time_shape(frames), channels, image_size, image_size)
    kind = "images" if frames is None else "clips"
    expected = f"float {kind} [B, {', '.join(map(str, shape))}] in [-1, 1]"
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{what} expects a tensor of {expected}, got {type(images).__name__}")
    if not images.is_floating_point():
        raise ValueError(f"{what} expects {expected}, got dtype {images.dtype}; convert uint8 x with x / 127.5 - 1")
    if images.ndim != 1 + len(shape) or tuple(images.shape[1:]) != shape:
        raise ValueError(f"{what} expects {expected}, got shape {list(images.shape)}")
    if images.numel() == 0:
        return
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{what} expects {expected}; the images hold NaN or inf")
    lo, hi = (float(v) for v in torch.aminmax(images.detach()))
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        hint = "; [0, 255] images: x / 127.5 - 1" if lo >= 0 else ""
        raise ValueError(f"{what} expects {expected}, got values in [{lo:.4g}, {hi:.4g}]{hint}")
    dark = stats is not None and sum(stats.background) / len(stats.background) < DARK_BACKGROUND
    if dark and lo >= 0:
        raise ValueError(
            f"{what} expects {expected}, got values in [{lo:.4g}, {hi:.4g}]: no pixel is darker than mid-grey, "
            f"while the training images have a black background ({stats.background[0]:.2f}); [0, 1] images: x * 2 - 1"
        )


def unusual_message(images: torch.Tensor, stats: ImageStats) -> str | None:
    """A warning naming the images unlike the training images (``ImageStats.unusual``), None if there are none."""
    odd = stats.unusual(images).nonzero().flatten().tolist()
    if not odd:
        return None
    shown = ", ".join(map(str, odd[:8])) + (", ..." if len(odd) > 8 else "")
    return (
        f"{len(odd)} of {len(images)} images (index {shown}) look unlike the training images: "
        f"{stats.describe(images[odd])}. Inverted (dark on light, or light on dark), in another value range, or "
        "another kind of picture? Their captions are unlikely to mean anything. (Warned once per model.)"
    )
