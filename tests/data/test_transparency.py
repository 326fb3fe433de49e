"""Transparent images are flattened onto the training background; vanishing strokes take the opposite tone."""

import numpy as np
from PIL import Image

from unimm.data.transparency import assumed_background, flatten_transparency, has_transparency

BLACK, WHITE = (-1.0,), (1.0,)


def _rgba(colour: tuple[int, int, int], alpha: np.ndarray, hidden: tuple[int, int, int] = (255, 255, 255)):
    """``colour`` where ``alpha`` > 0, ``hidden`` (the RGB of the transparent pixels) elsewhere."""
    rgb = np.where(alpha[..., None] > 0, np.array(colour, np.uint8), np.array(hidden, np.uint8))
    return Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8), "RGBA")


def _stroke() -> np.ndarray:
    alpha = np.zeros((6, 6), np.uint8)
    alpha[1:5, 2] = 255
    alpha[1, 3] = 128  # a half-transparent edge
    return alpha


def test_white_filled_transparency_becomes_the_black_background():
    alpha = _stroke()
    flat = np.asarray(flatten_transparency(_rgba((255, 255, 255), alpha), BLACK))
    assert flat.ndim == 2 and np.array_equal(flat, alpha)  # white strokes on black: the alpha itself


def test_strokes_that_would_vanish_take_the_opposite_tone():
    alpha = _stroke()
    for pen in [(0, 0, 0), (0, 0, 255), (30, 30, 30)]:  # a dark pen on a transparent sheet, black-background model
        assert np.array_equal(np.asarray(flatten_transparency(_rgba(pen, alpha), BLACK)), alpha), pen
    on_white = np.asarray(flatten_transparency(_rgba((255, 255, 255), alpha, hidden=(0, 0, 0)), WHITE))
    assert np.array_equal(on_white, 255 - alpha)  # white pen, white-background model: drawn dark
    grey = np.asarray(flatten_transparency(_rgba((128, 128, 128), alpha), BLACK))
    assert grey[2, 2] == 128 and grey[0, 0] == 0  # enough contrast: kept as it is


def test_rgb_composites_without_recolouring():
    alpha = _stroke()
    flat = np.asarray(flatten_transparency(_rgba((250, 240, 200), alpha), (1.0, 1.0, 1.0)))
    assert flat.shape == (6, 6, 3)
    assert tuple(flat[0, 0]) == (255, 255, 255) and tuple(flat[2, 2]) == (250, 240, 200)  # light colour kept


def test_which_images_have_transparency_and_the_assumed_background():
    alpha = _stroke()
    assert has_transparency(_rgba((0, 0, 0), alpha)) and has_transparency(Image.new("LA", (2, 2)))
    palette = Image.new("P", (2, 2))
    assert not has_transparency(palette) and not has_transparency(Image.new("L", (2, 2)))
    palette.info["transparency"] = 0
    assert has_transparency(palette)
    assert assumed_background(1) == (-1.0,) and assumed_background(3) == (1.0, 1.0, 1.0)
