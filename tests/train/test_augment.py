"""Augmentation of the images read: shift (``data.shift``), then rotation and zoom (``data.rotate`` / ``scale``),
drawn per example from the stream's seeded RNG; the images generated are never augmented."""

import pytest
import torch

from conftest import tiny_preset
from unimm.train.loop import resolve_data
from unimm.train.stream import ExampleStream, augment, rotate_zoom


def _bar() -> torch.Tensor:
    image = -torch.ones(1, 9, 9)
    image[0, 0:2, 4] = 1.0  # a vertical bar at the top centre
    return image


def test_rotation_by_a_quarter_turn_moves_the_bar_to_the_side_and_fills_the_background():
    turned = rotate_zoom(_bar(), 90.0, 1.0)
    assert (turned[0] > 0).nonzero().tolist() == [[4, 7], [4, 8]]  # top centre -> right centre (clockwise)
    assert torch.allclose(turned[0, :3], torch.full((3, 9), -1.0), atol=1e-6)  # nothing from outside but background
    assert torch.allclose(rotate_zoom(_bar(), 0.0, 1.0), _bar(), atol=1e-6)  # the identity map is exact


def test_zoom_enlarges_about_the_centre():
    image = -torch.ones(1, 9, 9)
    image[0, 3:6, 3:6] = 1.0  # a 3 x 3 square in the centre
    assert int((rotate_zoom(image, 0.0, 5 / 3)[0] > 0).sum()) == 25  # 5 x 5
    assert int((rotate_zoom(image, 0.0, 1 / 3)[0] > 0).sum()) <= 1  # shrunk to about a pixel


def test_augment_shifts_then_rotates_and_leaves_clips_frame_by_frame():
    shifted = augment(_bar(), (2, 0))
    assert (shifted[0] > 0).nonzero().tolist() == [[2, 4], [3, 4]]
    both = augment(_bar(), (0, -2, 90.0, 1.0))  # bar to column 2, then the quarter turn: rows 2-3 -> ... row 2
    assert (both[0] > 0).nonzero().tolist() == [[2, 7], [2, 8]]
    clip = torch.stack([_bar(), augment(_bar(), (2, 0))])  # [T, C, H, W]
    turned = augment(clip, (0, 0, 90.0, 1.0))
    assert torch.allclose(turned[0], rotate_zoom(_bar(), 90.0, 1.0)) and turned.shape == clip.shape


def _stream(digits_dir, **data):
    cfg = tiny_preset(digits_dir, "quick", **{f"data.{k}": v for k, v in data.items()})
    sample, templates = resolve_data(cfg)
    return ExampleStream(sample, templates, cfg.data, 32, 0), sample


def test_the_stream_rotates_and_zooms_only_what_is_read_and_keeps_its_examples(digits_dir):
    plain, data = _stream(digits_dir, shift=1)
    rotated, _ = _stream(digits_dir, shift=1, rotate=15.0, scale=0.1)
    for k in range(3):
        before, after = plain.samples(k), rotated.samples(k)
        assert [(i, ex, aug[:2]) for i, ex, aug in before] == [(i, ex, aug[:2]) for i, ex, aug in after]
        for (_, ex, aug), (_, _, shift) in zip(after, before, strict=True):
            if ex.task in ("caption", "vqa"):
                assert len(aug) == 4 and abs(aug[2]) <= 15.0 and 0.9 <= aug[3] <= 1.1
            else:
                assert aug == shift == (0, 0)  # generated: never augmented
    images, examples = rotated.batch(0)
    samples = rotated.samples(0)
    for image, example, (i, _, aug) in zip(images, examples, samples, strict=True):
        expected = data.images[i] if example.task == "t2i" else augment(data.images[i], aug)
        assert torch.equal(image, expected)
    assert any(ex.task == "caption" for ex in examples) and any(ex.task == "t2i" for ex in examples)


@pytest.mark.parametrize(("key", "value"), [("rotate", 50.0), ("rotate", -1.0), ("scale", 0.5)])
def test_out_of_range_augmentation_is_a_config_error(digits_dir, key, value):
    with pytest.raises(ValueError, match=key):
        tiny_preset(digits_dir, "quick", **{f"data.{key}": value})
