"""docs/recipes/own_latent_decoder.py: a latent run's decoder finetuned on the latents its transformer writes for
training edits; everything else of the run stays bit for bit."""

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_preset
from unimm.data.edits import load_edits
from unimm.data.shapes import ShapeObject, ShapeScene, render
from unimm.eval.editing import _to_pixels
from unimm.models import UnifiedModel
from unimm.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("own_latent_decoder", ROOT / "docs/recipes/own_latent_decoder.py")
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)


@pytest.fixture(scope="module")
def latent_run(edits_dir, tmp_path_factory) -> Path:
    cfg = tiny_preset(edits_dir, "quick", **{"sample.steps": 2, "train.steps": 2})
    return train(cfg, tmp_path_factory.mktemp("own") / "run", progress=False)


def test_pairs_are_the_latents_the_decoder_is_given(latent_run):
    model = UnifiedModel.from_pretrained(latent_run).eval()
    pairs = recipe.own_pairs(model, 6, batch=4)
    z, x = pairs["latents"], pairs["targets"]
    assert len(z) == len(x) == 6
    ok, right = recipe.usable(model, z), recipe.usable(model, z, only_right=True)
    assert ok.shape == right.shape == (6,) and ok.dtype == torch.bool and not (right & ~ok).any()
    # decoding the recorded latents gives the edited images the sampler returned (same seed, same edits)
    again = UnifiedModel.from_pretrained(latent_run).eval()
    edits = load_edits(again.cfg.data.path, "train")[:4]
    sources = _to_pixels(np.stack([e.source for e in edits]), again)
    edited = again.edit(sources, [e.edit.instruction for e in edits], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(again.writer.codec.vae.decode(z[:4]).clamp(-1, 1), edited, atol=1e-5)


def test_a_pair_is_usable_only_when_its_image_shows_the_target_scene_but_for_shapes():
    red, blue = ShapeObject("circle", "red", (10, 10), 5), ShapeObject("square", "blue", (22, 22), 5)
    target = ShapeScene((red, blue))
    drawn = lambda *objects: np.asarray(render(ShapeScene(objects)))  # noqa: E731
    assert recipe.same_scene_but_shapes(drawn(red, blue), target)
    assert recipe.same_scene_but_shapes(drawn(replace(red, shape="square"), blue), target)  # a misdrawn shape
    assert recipe.same_scene_but_shapes(drawn(replace(red, centre=(12, 9)), blue), target)  # within 2 pixels
    assert not recipe.same_scene_but_shapes(drawn(replace(red, centre=(14, 10)), blue), target)  # elsewhere
    assert not recipe.same_scene_but_shapes(drawn(replace(red, colour="green"), blue), target)
    assert not recipe.same_scene_but_shapes(drawn(red), target)  # missing
    extra = ShapeObject("triangle", "green", (10, 24), 5)
    assert not recipe.same_scene_but_shapes(drawn(red, blue, extra), target)


@pytest.mark.parametrize("share", ["0.5", "0"])
def test_only_the_decoder_changes_and_the_run_says_how(latent_run, tmp_path, monkeypatch, share):
    monkeypatch.setattr(
        recipe, "same_scene_but_shapes", lambda image, target: True
    )  # a 2-step model gets no edit right
    out = tmp_path / "out"
    argv = ["x", str(latent_run), str(out), "--n", "8", "--steps", "3", "--own-share", share]
    monkeypatch.setattr(sys, "argv", [*argv, "--pairs", str(tmp_path / "pairs.pt")])
    recipe.main()
    before, after = load_file(latent_run / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(recipe.PREFIX + "decoder.") for k in changed)
    made = json.loads((out / "decoder_from.json").read_text())
    assert made["settings"]["own_share"] == float(share) and made["training_edits_sampled"] == 8
    assert made["pairs_used"] + made["pairs_held_out"] <= 8
    assert not (out / "checkpoints").exists()
    UnifiedModel.from_pretrained(out)  # loads as any run
    with pytest.raises(SystemExit, match="exists"):
        recipe.main()


def test_pairs_of_another_setting_are_refused(latent_run, tmp_path, monkeypatch):
    monkeypatch.setattr(recipe, "same_scene_but_shapes", lambda image, target: True)
    pairs = tmp_path / "pairs.pt"
    first = ["x", str(latent_run), str(tmp_path / "a"), "--n", "4", "--steps", "1", "--pairs", str(pairs)]
    monkeypatch.setattr(sys, "argv", first)
    recipe.main()
    monkeypatch.setattr(sys, "argv", ["x", str(latent_run), str(tmp_path / "b"), "--n", "6", "--pairs", str(pairs)])
    with pytest.raises(SystemExit, match="holds pairs of"):
        recipe.main()
