"""Moving MNIST: deterministic clips, split hygiene, captions from the truth, bounces, the reader and its errors."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from unimm.cli import app
from unimm.data import prepare as prep
from unimm.data.datasets import load_split
from unimm.data.directions import DIRECTIONS, segments
from unimm.data.formats import read_idx_split, read_meta
from unimm.data.sources import TooManySkipsError
from unimm.data.video import DigitTrack, VideoConfig, axis_path, draw_track, generate, sprite, write_moving_mnist
from unimm.data.video_store import is_video_dataset, load_video_split
from unimm.data.video_text import PHRASES, clip_text

REAL_MNIST = Path(__file__).resolve().parents[2] / "data" / "mnist"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MIXED = VideoConfig(diagonal=True, p_two=0.3)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory, digits_dir) -> Path:
    """100 clips (80/10/10) of the conftest digits, diagonals and two-digit clips included."""
    root = tmp_path_factory.mktemp("video") / "moving"
    write_moving_mnist(root, digits_dir, 100, MIXED, seed=3)
    return root


def test_same_seed_same_bytes(tmp_path, digits_dir, video_dir):
    write_moving_mnist(tmp_path / "again", digits_dir, 100, MIXED, seed=3)
    assert tree_bytes(tmp_path / "again") == tree_bytes(video_dir)
    write_moving_mnist(tmp_path / "other", digits_dir, 100, MIXED, seed=4)
    assert tree_bytes(tmp_path / "other")["train/000000.npy"] != tree_bytes(video_dir)["train/000000.npy"]


def test_meta_counts_and_clip_shape(video_dir):
    meta = json.loads((video_dir / "meta.json").read_text())
    assert meta["format"] == "video" and meta["counts"] == {"train": 80, "val": 10, "test": 10}
    assert meta["frames"] == 8 and meta["size"] == [32, 32] and meta["class_names"] == NAMES
    assert is_video_dataset(video_dir) and not is_video_dataset(video_dir / "train")


def test_test_clips_use_only_test_digits(video_dir, digits_dir):
    test_images, test_labels = read_idx_split(digits_dir, "test")
    data = load_video_split(video_dir, "test")
    for clip, record in zip(data.clips.numpy()[:, :, 0], data.records, strict=True):
        for track in map(DigitTrack.from_dict, record["truth"]["digits"]):
            digit = sprite(test_images[track.source_index], 16)
            assert track.label == test_labels[track.source_index] and track.box == digit.shape[::-1]
            x, y = track.positions[0]
            window = clip[0, y : y + digit.shape[0], x : x + digit.shape[1]]
            assert (window >= digit).all()  # the test digit is there (another may overlap, never dimmer)


@pytest.mark.skipif(not (REAL_MNIST / "meta.json").is_file(), reason="needs data/mnist (make data)")
def test_real_mnist_test_clips_share_no_digit_with_train():
    def digests(images: np.ndarray) -> set[str]:
        return {hashlib.sha1(sprite(image, 16).tobytes()).hexdigest() for image in images}

    train = digests(read_idx_split(REAL_MNIST, "train")[0])
    images, labels = read_idx_split(REAL_MNIST, "test")
    used = set()
    for _, tracks in generate(images, labels, 200, VideoConfig(), seed=0, split="test"):
        used |= {hashlib.sha1(sprite(images[t.source_index], 16).tobytes()).hexdigest() for t in tracks}
    assert len(used) > 150 and not used & train


def test_captions_and_answers_follow_the_truth(video_dir):
    rows = [r for split in ("train", "val", "test") for r in load_video_split(video_dir, split).records]
    assert {len(r["truth"]["digits"]) for r in rows} == {1, 2}
    for row in rows:
        tracks = row["truth"]["digits"]
        qa = {item["question"]: item["answer"] for item in row["qa"]}
        assert qa["how many digits are there?"] == NAMES[len(tracks)]
        for track in tracks:
            phrase = f"{track['label']} moving {PHRASES[track['directions'][0]]}"
            if track["bounce_frame"] is not None:
                phrase += f", then bouncing {PHRASES[track['directions'][1]]}"
            assert phrase in row["caption"]
        if len(tracks) == 1:
            track = tracks[0]
            assert qa["which digit is moving?"] == NAMES[track["label"]]
            assert qa["which way does the digit move?"] == track["directions"][0]
            assert qa["does the digit bounce?"] == ("yes" if track["bounce_frame"] is not None else "no")


def test_clip_text_by_hand():
    down_up = DigitTrack(7, 0, (0, 3), (10, 16), ((0, 8),) * 8, ((5.0, 16.0),) * 8, ("down", "up"), 4)
    left = DigitTrack(8, 1, (-2, 0), (10, 16), ((9, 0),) * 8, ((14.0, 8.0),) * 8, ("left",), None)
    captions, qa = clip_text([down_up], NAMES)
    assert captions == ["a 7 moving down, then bouncing up", "a handwritten seven moving down, then bouncing up"]
    assert {"question": "which way does the digit move after it bounces?", "answer": "up"} in qa
    captions, qa = clip_text([down_up, left], NAMES)
    assert captions[0] == "a 7 moving down, then bouncing up and an 8 moving to the left"
    answers = {item["question"]: item["answer"] for item in qa}
    assert answers["how many digits are there?"] == "two" and answers["which digits are moving?"] == "seven and eight"
    assert answers["which way does the 8 move?"] == "left" and answers["does the 7 bounce?"] == "yes"


def test_a_digit_reaching_a_wall_reverses():
    assert axis_path(2, -3, 10, 5) == (2, 1, 4, 7, 10)  # crosses 0 at the 2nd step: reflected
    assert axis_path(8, 3, 10, 4) == (8, 9, 6, 3)  # crosses the far wall
    assert axis_path(0, 0, 10, 3) == (0, 0, 0)
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    images[:, 6:22, 10:18] = 200
    bounced = 0
    for _, tracks in generate(images, np.arange(4), 200, VideoConfig(diagonal=True), seed=1):
        (track,) = tracks
        xs, ys = zip(*track.positions, strict=True)
        limits = (32 - track.box[0], 32 - track.box[1])
        assert min(xs) >= 0 and max(xs) <= limits[0] and min(ys) >= 0 and max(ys) <= limits[1]
        speed = max(abs(v) for v in track.velocity)
        unit = DIRECTIONS[track.directions[0]]
        assert unit == tuple(int(np.sign(v)) for v in track.velocity)  # the first segment goes the drawn way
        if track.bounce_frame is None:
            continue
        bounced += 1
        before = track.positions[track.bounce_frame - 1]
        near = [
            before[axis] + track.velocity[axis] < 0 or before[axis] + track.velocity[axis] > limits[axis]
            for axis in (0, 1)
        ]
        assert any(near)  # it was about to cross a wall
        turned = DIRECTIONS[track.directions[1]]
        for axis in (0, 1):  # the axis that hit the wall turns round, the other goes on
            assert turned[axis] == (-unit[axis] if near[axis] else unit[axis])
        assert speed in (1, 2, 3) and 3 <= track.bounce_frame <= 6
    assert 60 < bounced < 140  # p_bounce = 0.5


def test_a_digit_with_no_path_is_an_error_not_a_hang():
    """12 px on a 16 px canvas leaves 4 px of room: 3 steps of 2 px fit only the narrow digit's way across."""
    cfg = VideoConfig(frames=4, size=16, digit_size=12, speeds=(2,), p_bounce=0.0)
    rng = np.random.default_rng(0)
    narrow = draw_track(rng, np.full((12, 6), 200, dtype=np.uint8), 1, 0, cfg)
    assert narrow.directions[0] in ("left", "right") and narrow.bounce_frame is None
    with pytest.raises(ValueError, match="no straight path of 4 frames"):
        draw_track(rng, np.full((12, 12), 200, dtype=np.uint8), 1, 0, cfg)


def test_segments_rule():
    assert segments([(0, 2)] * 3) == (["down"], [])
    assert segments([(0, 3), (0, 3), (0, 1), (0, -3), (0, -3)]) == (["down", "up"], [4])  # slower still goes down
    assert segments([(-2, 0), (-2, 0), (0, 0), (2, 0)]) == (["left", "right"], [3])
    assert segments([(0.1, 0.0)] * 2) == (["static"], [])


def test_reader_round_trip(video_dir):
    data = load_video_split(video_dir, "val")
    assert data.clips.shape == (10, 8, 1, 32, 32) and str(data.clips.dtype) == "torch.uint8"
    for clip, record in zip(data.clips, data.records, strict=True):
        assert record["split"] == "val"
        np.testing.assert_array_equal(clip[:, 0].numpy(), np.load(video_dir / "val" / record["file"]))
    assert data.class_names == NAMES and data.skipped.skipped == 0


def _broken_copy(video_dir: Path, tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(video_dir, root)
    return root


def test_truncated_clip_is_one_error_naming_the_file(video_dir, tmp_path):
    root = _broken_copy(video_dir, tmp_path)
    path = root / "val" / "000002.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(TooManySkipsError, match=r"000002\.npy.*bad_clip: truncated \.npy.*line 3"):
        load_video_split(root, "val")
    data = load_video_split(root, "val", max_skip_fraction=0.5)
    assert len(data) == 9 and data.skipped.reasons == {"bad_clip": 1}


def test_corrupt_and_missing_clips(video_dir, tmp_path):
    root = _broken_copy(video_dir, tmp_path)
    (root / "val" / "000001.npy").write_bytes(b"not a numpy file at all")
    (root / "val" / "000004.npy").unlink()
    with pytest.raises(TooManySkipsError, match=r"000001\.npy.*not a \.npy file"):
        load_video_split(root, "val")
    data = load_video_split(root, "val", max_skip_fraction=1.0)
    assert len(data) == 8 and data.skipped.reasons == {"bad_clip": 1, "missing_clip": 1}
    assert any("000004.npy" in key for _, key, _ in data.skipped.examples)


def test_malformed_listing_line_names_file_and_line(video_dir, tmp_path):
    root = _broken_copy(video_dir, tmp_path)
    listing = root / "test" / "captions.jsonl"
    lines = listing.read_text().splitlines(keepends=True)
    lines[2] = lines[2][:40] + "\n"
    lines[5] = json.dumps({"file": "../../etc/passwd", "caption": "x"}) + "\n"
    listing.write_text("".join(lines))
    with pytest.raises(TooManySkipsError, match=r"captions\.jsonl:3.*bad_json: Expecting property name"):
        load_video_split(root, "test")
    data = load_video_split(root, "test", max_skip_fraction=1.0)
    assert len(data) == 8 and [key.rsplit(":", 1)[1] for _, key, _ in data.skipped.examples] == ["3", "6"]


def test_load_split_reads_clips_with_their_text(video_dir):
    """The training loader reads a video dataset as clips [N, T, 1, H, W] in [-1, 1] with each clip's caption,
    questions and label (-1 for two digits); the image-only reader still says what it is."""
    data, raw = load_split(video_dir, "val"), load_video_split(video_dir, "val")
    assert data.images.shape == (len(raw), 8, 1, 32, 32) and data.frames == 8
    assert torch.equal(data.images, raw.clips.float() / 127.5 - 1)
    assert data.captions == [r["caption"] for r in raw.records]
    assert data.qa[0] == [(q["question"], q["answer"]) for q in raw.records[0]["qa"]]
    digits = [r["truth"]["digits"] for r in raw.records]
    assert data.labels.tolist() == [d[0]["label"] if len(d) == 1 else -1 for d in digits]
    assert load_split(video_dir, "val", image_size=16).images.shape[-3:] == (1, 16, 16)
    with pytest.raises(ValueError, match="a video dataset"):
        read_meta(video_dir)


def test_inspect_understands_a_video_dataset(video_dir):
    result = CliRunner().invoke(app, ["data", "inspect", str(video_dir), "--examples", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("video", "100 (test=10, train=80, val=10)", "8 frames of 32x32", "directions", "bounce=", "e.g."):
        assert text in result.output, text


def test_prepare_needs_the_digits_first(tmp_path, capsys):
    assert prep.prepare(tmp_path / "out", ["moving_mnist"]) == []
    assert "prepare it first" in capsys.readouterr().out
