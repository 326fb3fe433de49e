"""Flatten a transparent image onto the background the training images have.

A model trained on MNIST knows white strokes on black; a PNG with a transparent background must become
that, not a black digit on white. Transparent pixels take ``background`` (the run's ``ImageStats``, else
``assumed_background``). For a one-channel model, strokes that would then vanish into the background (their
tone within ``MIN_CONTRAST`` of it, e.g. a black pen on a transparent sheet for a black-background model) are
drawn in the opposite tone, so the alpha channel gives the shape.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MIN_CONTRAST = 0.25  # luminance in [0, 1]
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as datasets.convert_channels


def assumed_background(channels: int) -> tuple[float, ...]:
    """The background when a run has no ``ImageStats``: black for one channel (MNIST, digits), white for RGB
    (emoji, shapes), per channel in [-1, 1]."""
    return (-1.0,) if channels == 1 else (1.0,) * channels


def has_transparency(image: Image.Image) -> bool:
    """Whether ``image`` has an alpha channel or a transparent palette entry / colour."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def flatten_transparency(image: Image.Image, background: tuple[float, ...]) -> Image.Image:
    """``image`` over ``background`` (per channel in [-1, 1]; one value: a grey model) as an L or RGB image."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    colour, alpha = rgba[..., :3], rgba[..., 3:]
    grey = len(background) == 1
    bg = (np.asarray(background * 3 if grey else background, dtype=np.float32) + 1.0) / 2.0
    if grey:
        colour = (colour @ _LUMA)[..., None].repeat(3, axis=-1)
        weight = alpha[..., 0]
        if weight.sum() > 0:
            stroke = float((colour[..., 0] * weight).sum() / weight.sum())
            if abs(stroke - float(bg[0])) < MIN_CONTRAST:
                colour = np.broadcast_to(1.0 - bg, colour.shape)
    flat = np.rint((colour * alpha + bg * (1.0 - alpha)) * 255.0).clip(0, 255).astype(np.uint8)
    return Image.fromarray(flat[..., 0] if grey else flat)
