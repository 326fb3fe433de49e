"""The motion metric on hand-made clips, and against the truth of generated Moving MNIST clips."""

import numpy as np
import pytest
import torch

from unimm.data.formats import read_idx_split
from unimm.data.video import VideoConfig, generate
from unimm.eval.motion import centres_of_mass, clip_motion, frame_consistency, motion_accuracy


def blob_clip(path: list[tuple[int, int]], size: int = 16) -> np.ndarray:
    """uint8 [T, H, W]: a 3x3 blob (brighter centre) with its top-left at each (x, y)."""
    clip = np.zeros((len(path), size, size), dtype=np.uint8)
    for t, (x, y) in enumerate(path):
        clip[t, y : y + 3, x : x + 3] = 120
        clip[t, y + 1, x + 1] = 255
    return clip


LEFT = blob_clip([(12 - 2 * t, 5) for t in range(6)])
STATIC = blob_clip([(6, 6)] * 6)
DOWN_UP = blob_clip([(4, y) for y in (1, 4, 7, 10, 9, 6)])


def test_centres_follow_the_blob():
    np.testing.assert_allclose(centres_of_mass(LEFT), [(13 - 2 * t, 6) for t in range(6)])
    assert np.isnan(centres_of_mass(np.zeros((2, 4, 4)))).all()


def test_left_scores_one_for_left_and_zero_for_right():
    assert clip_motion(LEFT).directions == ["left"]
    assert motion_accuracy([LEFT], ["left"]) == 1.0
    assert motion_accuracy([LEFT], ["right"]) == 0.0
    assert motion_accuracy([LEFT, LEFT], ["left", "up"]) == 0.5


def test_static_clip():
    motion = clip_motion(STATIC)
    assert motion.directions == ["static"] and motion.bounce_frame is None
    assert motion_accuracy([STATIC], ["static"]) == 1.0 and motion_accuracy([STATIC], ["left"]) == 0.0
    assert clip_motion(np.zeros((4, 8, 8))).direction == "static"  # nothing on screen


def test_bounce_is_detected():
    motion = clip_motion(DOWN_UP)
    assert motion.directions == ["down", "up"] and motion.bounce_frame == 4
    assert motion_accuracy([DOWN_UP], [["down", "up"]]) == 1.0
    assert motion_accuracy([DOWN_UP], ["down"]) == 1.0  # a name checks the first segment only
    assert motion_accuracy([DOWN_UP], [["down"]]) == 0.0 and motion_accuracy([DOWN_UP], [["up", "down"]]) == 0.0


def test_tensors_in_minus_one_one_after_rescaling():
    clips = torch.from_numpy(np.stack([LEFT, DOWN_UP])).float().div(127.5).sub(1).unsqueeze(2)  # [N,T,1,H,W]
    assert motion_accuracy((clips + 1) / 2, ["left", ["down", "up"]]) == 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="2 clips but 1"):
        motion_accuracy([LEFT, LEFT], ["left"])
    with pytest.raises(ValueError, match="shape"):
        clip_motion(np.zeros((2, 3, 4, 4)))


def test_frame_consistency():
    assert frame_consistency(LEFT) == 1.0 and frame_consistency(DOWN_UP) == 1.0
    changed = LEFT.copy()
    changed[3:, :, :] = np.roll(changed[3:], 1, axis=1) // 2 + np.roll(changed[3:], -1, axis=1) // 2
    assert frame_consistency(changed) == pytest.approx(2 / 5)


@pytest.mark.parametrize(
    "cfg", [VideoConfig(), VideoConfig(diagonal=True, speeds=(1, 2, 3, 4))], ids=["axial", "diagonal"]
)
def test_generated_clips_agree_with_their_truth(digits_dir, cfg):
    images, labels = read_idx_split(digits_dir, "test")
    clips, expected, bounces = [], [], []
    for clip, (track,) in generate(images, labels, 300, cfg, seed=7, split="test"):
        clips.append(clip)
        expected.append(list(track.directions))
        bounces.append(track.bounce_frame)
    assert 0.3 < sum(b is not None for b in bounces) / len(bounces) < 0.7
    assert motion_accuracy(clips, expected) >= 0.98
    assert motion_accuracy(clips, [e[0] for e in expected]) >= 0.98
    found = [clip_motion(clip).bounce_frame for clip in clips]
    assert sum(f == b for f, b in zip(found, bounces, strict=True)) / len(clips) >= 0.98
