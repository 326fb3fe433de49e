"""Evaluation of a video model: the clip scores are right on real clips (motion 1, time-reversed motion 0), and
``unimm eval`` on a run trained on clips writes its numbers, an animated GIF and frame strips."""

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import tiny_preset
from unimm.cli import app
from unimm.data import load_split
from unimm.eval.classifier import accuracy, load_or_train_classifier
from unimm.eval.clip_evaluator import DIRECTION_NAMES, motion_classes
from unimm.eval.suites import SUITES, Suite
from unimm.eval.video import expected_motion, score_clips
from unimm.train import train

TINY = Suite("tiny", understand_n=6, per_class=1, prompts_n=6, batch_size=4, classifier_steps=40, clips_n=6)


@pytest.fixture(scope="module")
def clip_run(clips_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("video-run") / "transfusion"
    return train(tiny_preset(clips_dir, "transfusion", **{"sample.steps": 2}), out, progress=False)


def test_real_clips_score_their_own_motion_and_reversed_clips_the_opposite(clips_dir, tmp_path):
    """The real test clips (one digit, no bounce) move as their answers say: motion accuracy 1; played backwards
    every one moves the other way: 0. Per-frame accuracy of real clips is the frame classifier's accuracy."""
    test = load_split(clips_dir, "test")
    clf, clf_acc = load_or_train_classifier(clips_dir, cache_dir=tmp_path, steps=40)
    motions = [expected_motion(qa) for qa in test.qa]
    assert all(m is not None and len(m) == 1 for m in motions)
    real = score_clips(test.images, test.labels, motions, clf)
    assert real["motion_accuracy"] == real["motion_accuracy_segments"] == 1.0
    assert (
        real["frame_prompt_accuracy"]
        == pytest.approx(clf_acc)
        == pytest.approx(accuracy(clf, test.images, test.labels))
    )
    assert real["frame_consistency"] == 1.0  # a digit moving 1 px a frame inside the canvas keeps its pixels
    backwards = score_clips(test.images.flip(1), test.labels, motions, clf)
    assert backwards["motion_accuracy"] == 0.0
    assert backwards["frame_prompt_accuracy"] == real["frame_prompt_accuracy"]  # the same frames


def test_clip_evaluator_names_digit_and_direction(clips_dir):
    """Its classes are digit x first direction, from each clip's own answers; its input is the frames stacked."""
    test = load_split(clips_dir, "test")
    classes = motion_classes(test)
    first = [dict(qa)["which way does the digit move?"] for qa in test.qa]
    assert classes.labels.tolist() == [
        int(y) * 8 + DIRECTION_NAMES.index(d) for y, d in zip(test.labels, first, strict=True)
    ]
    assert classes.images.shape == (len(test), 3, 8, 8) and torch.equal(classes.images[:, 1], test.images[:, 1, 0])
    assert len(classes.class_names) == 80


def test_cli_eval_of_a_video_run_writes_numbers_gif_and_strips(clip_run, tmp_path, monkeypatch):
    monkeypatch.setitem(SUITES, "quick", TINY)
    monkeypatch.setenv("UNIMM_CACHE", str(tmp_path / "cache"))
    res = CliRunner().invoke(app, ["eval", str(clip_run), "--out", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    assert "frame_prompt_accuracy=" in res.output and "motion_accuracy=" in res.output
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    g, u = result["generation"], result["understanding"]
    assert g["n"] == 6 and len(g["prompts"]) == 6 and g["reference"]["motion_accuracy"] == 1.0
    assert all(0 <= g[k] <= 1 for k in ("frame_prompt_accuracy", "same_class_every_frame", "motion_accuracy"))
    assert u["n"] == 6 and u["vqa_n"] > 6 and 0 <= u["direction_vqa_accuracy"] <= 1
    assert 0 <= result["evaluators"]["clip_evaluator_test_accuracy"] <= 1 and "not the I3D FVD" in str(result)
    assert g["frechet"]["fid"] is None and "64" in g["frechet"]["fid_note"]  # 6 clips: too few for 64-d features
    assert g["frechet"]["kid_mean"] is not None
    with Image.open(tmp_path / "eval" / "samples.gif") as gif:
        assert gif.n_frames == 3  # the clips' frames play in turn
    with Image.open(tmp_path / "eval" / "strips.png") as strips:
        assert strips.size == ((3 * 10 + 2) * 3, (6 * 10 + 2) * 3)  # a row of 3 frames per clip: 8 px + 2 pad, x3
    assert "samples.gif" in (tmp_path / "eval" / "eval.md").read_text()
    torch.manual_seed(0)  # the CLI seeded the global RNG; leave it as other tests expect
