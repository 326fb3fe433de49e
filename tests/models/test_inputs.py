"""caption() refuses images of the wrong dtype, shape or range, and warns once about images unlike the training data."""

import warnings

import pytest
import torch

from conftest import tiny_overrides
from unimm.config import load_config
from unimm.data.datasets import load_split
from unimm.data.image_stats import ImageStats
from unimm.models import UnifiedModel
from unimm.tokenizers.text import TextTokenizer


@pytest.fixture(scope="module")
def model(digits_dir) -> UnifiedModel:
    cfg = load_config(None, tiny_overrides(digits_dir, **{"data.image_size": 8, "data.channels": 1}))
    torch.manual_seed(0)
    return UnifiedModel(cfg, TextTokenizer.train(["a handwritten seven", "seven"], 300)).eval()


@pytest.fixture(scope="module")
def digits(digits_dir) -> torch.Tensor:
    return load_split(digits_dir, "test").images[:4]


def _caption(model, images, stats=None) -> list[warnings.WarningMessage]:
    model.image_stats, model._warned_unusual = stats, False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.caption(images, max_new_tokens=2)
    return caught


def test_wrong_dtype_range_or_shape_is_a_clear_error(model, digits):
    uint8 = ((digits + 1) * 127.5).round().to(torch.uint8)
    with pytest.raises(ValueError, match=r"\[-1, 1\].*dtype torch.uint8.*x / 127.5 - 1"):
        model.caption(uint8)
    with pytest.raises(ValueError, match=r"values in \[0, 255\]; \[0, 255\] images: x / 127.5 - 1"):
        model.caption(uint8.float())
    with pytest.raises(ValueError, match=r"\[B, 1, 8, 8\].*got shape \[4, 3, 8, 8\]"):
        model.caption(digits.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match=r"got shape \[1, 8, 8\]"):
        model.caption(digits[0])
    with pytest.raises(ValueError, match="NaN or inf"):
        model.caption(torch.full_like(digits, float("nan")))
    with pytest.raises(ValueError, match="tensor"):
        model.caption(digits.numpy())


def test_unit_range_images_are_refused_when_the_training_background_is_black(model, digits):
    unit = (digits + 1) / 2
    assert len(_caption(model, unit)) == 0  # without the run's statistics [0, 1] cannot be told from [-1, 1]
    stats = ImageStats.of(digits)
    with pytest.raises(ValueError, match=r"no pixel is darker than mid-grey.*black background.*x \* 2 - 1"):
        model.image_stats = stats
        model.caption(unit)
    assert _caption(model, digits, stats) == []
    white = ImageStats.of(unit)  # light training images (no black background): light inputs are normal
    assert white.background == (0.0,) and _caption(model, unit, white) == []


def test_images_unlike_the_training_images_warn_once(model, digits):
    stats = ImageStats.of(digits)
    model.image_stats, model._warned_unusual = stats, False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.caption(torch.cat([digits[:1], -digits[1:2]]), max_new_tokens=2)  # the second one inverted
        model.caption(-digits, max_new_tokens=2)
    assert len(caught) == 1  # once per model
    message = str(caught[0].message)
    assert "1 of 2 images (index 1) look unlike the training images" in message and "Inverted" in message


def test_stats_travel_with_save_and_from_pretrained(model, digits, tmp_path):
    model.image_stats = ImageStats.of(digits)
    model.save_pretrained(tmp_path / "m")
    loaded = UnifiedModel.from_pretrained(tmp_path / "m")
    assert loaded.image_stats == model.image_stats and loaded.background == (-1.0,)
    (tmp_path / "m" / "image_stats.json").unlink()
    old = UnifiedModel.from_pretrained(tmp_path / "m")  # a run from before the statistics were kept
    assert old.image_stats is None and old.background == (-1.0,)  # the documented rule: grey -> black
