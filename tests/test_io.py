"""load_images: files -> [-1, 1] tensors at the model's size; transparency flattened onto the given background."""

import numpy as np
import pytest
import torch
from PIL import Image

from unimm.io import load_images


def _digit_png(path, hidden=(255, 255, 255)):
    """A stroke in the alpha channel, black pen, transparent pixels holding ``hidden`` (often white)."""
    alpha = np.zeros((8, 8), np.uint8)
    alpha[1:7, 4] = 255
    rgb = np.where(alpha[..., None] > 0, np.uint8(0), np.array(hidden, np.uint8))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    return torch.from_numpy(alpha).float() / 127.5 - 1


def test_transparent_png_becomes_white_on_black_for_a_black_background_model(tmp_path):
    expected = _digit_png(tmp_path / "d.png")
    images = load_images([tmp_path / "d.png"], 8, 1, background=(-1.0,))
    assert images.shape == (1, 1, 8, 8) and torch.equal(images[0, 0], expected)
    assert torch.equal(load_images([tmp_path / "d.png"], 8, 1), images)  # the default for one channel: black


def test_transparent_png_on_a_white_background_rgb_model(tmp_path):
    _digit_png(tmp_path / "d.png", hidden=(0, 0, 0))
    images = load_images([tmp_path / "d.png"], 8, 3)
    assert images.shape == (1, 3, 8, 8)
    assert images[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0] and images[0, :, 3, 4].tolist() == [-1.0, -1.0, -1.0]


def test_opaque_images_are_unchanged_and_missing_files_named(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(grey).save(tmp_path / "g.png")
    images = load_images([tmp_path / "g.png"], 8, 1, background=(1.0,))
    assert torch.equal(images[0, 0], torch.from_numpy(grey).float() / 127.5 - 1)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_images([tmp_path / "nope.png"], 8, 1)
