"""The command line, end to end on a tiny run: train, caption, generate, and clear errors."""

import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from conftest import tiny_preset_overrides
from unimm.cli import app
from unimm.data import load_split

runner = CliRunner()
QUICK = str(Path(__file__).parents[1] / "configs" / "quick.toml")


def _sets(digits_dir, preset: str = "quick", **extra) -> list[str]:
    return [a for o in tiny_preset_overrides(digits_dir, preset, **extra) for a in ("--set", o)]


def test_train_caption_generate(digits_dir, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", QUICK, "--out", str(run), *_sets(digits_dir)])
    assert result.exit_code == 0, result.output
    img = tmp_path / "x.png"
    Image.new("L", (28, 28), 0).save(img)
    result = runner.invoke(app, ["caption", str(run), str(img), "--question", "what digit is this?"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(str(img))
    grid = tmp_path / "grid.png"
    result = runner.invoke(
        app, ["generate", str(run), "a handwritten seven", "the digit 1", "--n", "3", "--out", str(grid)]
    )
    assert result.exit_code == 0, result.output
    with Image.open(grid) as g:
        assert g.width > g.height > 0  # two rows of three


def _caption(run: Path, image: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, ["caption", str(run), str(image)])
    return result, [str(w.message) for w in caught]


def test_transparent_inverted_and_blank_images(digits_dir, tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", QUICK, "--out", str(run), *_sets(digits_dir)]).exit_code == 0
    assert (run / "image_stats.json").is_file()
    digit = ((load_split(digits_dir, "test").images[0, 0] + 1) * 127.5).round().byte().numpy()
    rgb = np.where(digit[..., None] > 0, 0, 255).repeat(3, axis=-1)  # black pen, transparent pixels white
    Image.fromarray(np.dstack([rgb, digit]).astype(np.uint8), "RGBA").save(tmp_path / "t.png")
    result, warned = _caption(run, tmp_path / "t.png")
    assert result.exit_code == 0 and warned == [], (result.output, warned)  # white on black, as trained
    Image.fromarray(255 - digit).save(tmp_path / "inverted.png")
    result, warned = _caption(run, tmp_path / "inverted.png")
    assert result.exit_code == 0 and len(warned) == 1 and "look unlike the training images" in warned[0]
    Image.new("L", (8, 8), 255).save(tmp_path / "white.png")
    result, _ = _caption(run, tmp_path / "white.png")
    assert result.exit_code == 2 and "darker than mid-grey" in result.output and "Traceback" not in result.output


def test_discrete_preset_through_the_cli(digits_dir, tmp_path):
    """A VQ strategy trains, captions and generates through the same commands."""
    preset = str(Path(__file__).parents[1] / "configs" / "show-o.toml")
    run = tmp_path / "run"
    sets = _sets(digits_dir, "show-o", **{"codec.steps": 3})
    assert "codec.codebook=16" in sets  # the VQ tokenizer made tiny
    result = runner.invoke(app, ["train", preset, "--out", str(run), *sets])
    assert result.exit_code == 0, result.output
    img = tmp_path / "x.png"
    Image.new("L", (8, 8), 0).save(img)
    result = runner.invoke(app, ["caption", str(run), str(img)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["generate", str(run), "a handwritten seven", "--n", "2", "--out", str(tmp_path / "g.png")]
    )
    assert result.exit_code == 0 and (tmp_path / "g.png").is_file(), result.output


def test_bad_config_key_is_one_line_error(digits_dir, tmp_path):
    result = runner.invoke(app, ["train", QUICK, "--out", str(tmp_path), "--set", "model.dimm=3"])
    assert result.exit_code == 2
    assert "unknown config key 'model.dimm'" in result.output
    assert "Traceback" not in result.output


def test_corrupt_image_is_named(digits_dir, tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", QUICK, "--out", str(run), *_sets(digits_dir)]).exit_code == 0
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = runner.invoke(app, ["caption", str(run), str(bad)])
    assert result.exit_code == 2 and "bad.png" in result.output


def test_missing_run_dir(tmp_path):
    result = runner.invoke(app, ["generate", str(tmp_path / "nope"), "seven"])
    assert result.exit_code == 2 and "not a unimm model directory" in result.output


def test_config_upgrade_writes_the_new_form(tmp_path):
    from unimm.config import load_config

    old = Path(__file__).parent / "data_old_presets" / "quick.toml"
    new = tmp_path / "quick.toml"
    result = runner.invoke(app, ["config", "upgrade", str(old), "--out", str(new)])
    assert result.exit_code == 0, result.output
    assert new.read_text().startswith("# The demo preset")  # the leading comment block is kept
    upgraded = load_config(new)
    assert upgraded.data.shift == 0  # the old file's; the preset has shifted reads since (tests/test_config.py)
    upgraded.data.shift = load_config(QUICK).data.shift
    assert upgraded == load_config(QUICK)
    result = runner.invoke(app, ["config", "upgrade", QUICK])
    assert result.exit_code == 2 and "already in today's form" in result.output


def test_fork_trains_a_cooldown_branch_and_refuses_a_missing_fork_step(digits_dir, tmp_path):
    stable = tmp_path / "stable"
    wsd = ["train.schedule='wsd'", "train.cooldown=0.5", "train.steps=4", "train.branches=[4]"]
    result = runner.invoke(app, ["train", QUICK, "--out", str(stable), *_sets(digits_dir), *_flags(wsd)])
    assert result.exit_code == 0, result.output
    branch = tmp_path / "branch"
    result = runner.invoke(app, ["fork", str(stable), "--steps", "4", "--out", str(branch)])
    assert result.exit_code == 0, result.output
    assert f"branch saved to {branch}" in result.output
    assert json.loads((branch / "fork.json").read_text())["step"] == 2
    result = runner.invoke(app, ["fork", str(stable), "--steps", "3", "--out", str(tmp_path / "other")])
    assert result.exit_code == 2
    assert "error:" in result.output and "no checkpoint at step 1, the fork step of budget 3" in result.output


def _flags(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def test_video_run_trains_generates_gifs_and_captions_clips(clips_dir, tmp_path):
    """``unimm train --set data.path=<video dataset>``, then ``generate`` writes animated GIFs (a grid, or one per
    clip) and ``caption`` reads the dataset's own ``.npy`` clips; a PNG grid of clips is refused with the reason."""
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", QUICK, "--out", str(run), *_sets(clips_dir)]).exit_code == 0
    gif = tmp_path / "clips.gif"
    result = runner.invoke(app, ["generate", str(run), "a 3 moving up", "--n", "2", "--out", str(gif)])
    assert result.exit_code == 0, result.output
    with Image.open(gif) as g:
        assert g.n_frames == 3 and g.width > g.height  # 3 frames, each a row of 2 clips
    result = runner.invoke(app, ["generate", str(run), "a 3 moving up", "--n", "2", "--out", str(tmp_path / "each")])
    assert result.exit_code == 0 and sorted(p.name for p in (tmp_path / "each").glob("*.gif")) == ["0-0.gif", "0-1.gif"]
    refused = runner.invoke(app, ["generate", str(run), "a 3 moving up", "--out", str(tmp_path / "x.png")])
    assert refused.exit_code != 0 and "a video model generates clips" in refused.output
    clip = clips_dir / "test" / "000000.npy"
    result = runner.invoke(app, ["caption", str(run), str(clip), "--question", "which way does the digit move?"])
    assert result.exit_code == 0 and result.output.startswith(str(clip)), result.output
    image = tmp_path / "x.png"
    Image.new("L", (8, 8), 0).save(image)
    assert "cannot read clip" in runner.invoke(app, ["caption", str(run), str(image)]).output


def test_edit_run_trains_evaluates_and_edits(edits_dir, tmp_path):
    """``unimm train --set data.path=<edit dataset>``, then ``eval`` writes edit accuracy and preservation with
    their intervals and ``edit`` writes each source beside its edit."""
    run = tmp_path / "run"
    sets = _sets(edits_dir, "chameleon", **{"sample.max_new_tokens": 6})
    result = runner.invoke(app, ["train", str(Path(QUICK).parent / "chameleon.toml"), "--out", str(run), *sets])
    assert result.exit_code == 0, result.output
    refused = runner.invoke(app, ["eval", str(run), "--sample", "bogus=1"])
    assert refused.exit_code != 0 and "bogus" in refused.output and not (run / "eval").exists()
    result = runner.invoke(app, ["eval", str(run), "--seed", "1", "--sample", "image_temperature=0"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "eval" / "eval.json").read_text())["sample"]["image_temperature"] == 0
    scores = json.loads((run / "eval" / "eval.json").read_text())["editing"]
    test_edits = len(load_split(edits_dir, "test"))
    for key in ("edit", "preservation", "both"):
        assert scores[key]["n"] == test_edits and 0 <= scores[key]["rate"] <= 1 and len(scores[key]["ci"]) == 2
        assert f"{key}={scores[key]['rate']:.4g}" in result.output
    assert scores["scored_resized"] and set(scores["per_kind"]) <= {"recolour", "move", "add", "remove", "swap"}
    assert scores["codec_ceiling"]["preservation"]["n"] == test_edits  # the VQ codec's round trip of the targets
    assert "| all |" in (run / "eval" / "eval.md").read_text() and (run / "eval" / "edits.png").is_file()
    assert "Codec ceiling" in (run / "eval" / "eval.md").read_text()
    # sampling settings are chosen on the validation edits, never the test edits
    result = runner.invoke(app, ["eval", str(run), "--split", "val", "--out", str(tmp_path / "val")])
    assert result.exit_code == 0, result.output
    val = json.loads((tmp_path / "val" / "eval.json").read_text())
    assert val["dataset"]["split"] == "val" and val["editing"]["edit"]["n"] == len(load_split(edits_dir, "val"))
    assert "val edits of" in (tmp_path / "val" / "eval.md").read_text()
    refused = runner.invoke(app, ["eval", str(run), "--split", "train", "--out", str(tmp_path / "train")])
    assert refused.exit_code != 0 and "'test' or 'val'" in refused.output
    source = edits_dir / "images" / "000000-source.png"
    out = tmp_path / "edited.png"
    edit = ["edit", str(run), "--image", str(source), "--instruction", "remove the circle", "--out", str(out)]
    result = runner.invoke(app, edit)
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.width > im.height  # the source, then its edit
    refused = runner.invoke(app, ["edit", str(run), "--image", str(source), "--instruction", "a", "--instruction", "b"])
    assert refused.exit_code != 0 and "one per --image" in refused.output
