"""ImageStats: the training images' statistics, saved with a run, tell real inputs from inverted or rescaled ones."""

import torch

from unimm.data.datasets import load_split
from unimm.data.image_stats import STATS_FILE, ImageStats


def test_stats_of_digits_and_round_trip(digits_dir, tmp_path):
    stats = ImageStats.of(load_split(digits_dir, "train").images)
    assert stats.background == (-1.0,) and -0.5 < stats.mean < -0.3 and 0 < stats.mean_std < 0.1
    assert stats.save(tmp_path) == tmp_path / STATS_FILE
    assert ImageStats.load(tmp_path) == stats
    assert ImageStats.load(tmp_path / "elsewhere") is None


def test_real_images_pass_inverted_and_rescaled_ones_are_unusual(digits_dir):
    stats = ImageStats.of(load_split(digits_dir, "train").images)
    test = load_split(digits_dir, "test").images
    assert not stats.unusual(test).any()
    assert stats.unusual(-test).all()  # inverted: dark strokes on white
    assert stats.unusual((test + 1) / 2).all()  # [0, 1] instead of [-1, 1]
    mixed = torch.cat([test[:2], -test[:1]])
    assert stats.unusual(mixed).tolist() == [False, False, True]
    assert "training images: -0.39" in stats.describe(-test[:1])


def test_background_is_per_channel():
    images = torch.full((4, 3, 6, 6), -1.0)
    images[:, 0] = 1.0  # red everywhere
    images[:, :, 2:4, 2:4] = 0.0
    stats = ImageStats.of(images)
    assert stats.background == (1.0, -1.0, -1.0) and stats.mean_std == 0.0
    assert not stats.unusual(images).any()
