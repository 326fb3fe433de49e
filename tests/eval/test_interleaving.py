"""``unimm eval --suite interleaved`` (``eval/interleaving.py``): replies that draw every slot right score 1 with
consistency 1, wrong or missing images score 0; the bootstrap interval resamples tasks; the CLI writes the
report of a run trained with interleaved examples."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import unimm.eval.suites as suites
from conftest import tiny_preset
from unimm.cli import app
from unimm.data.shapes import ShapeObject, ShapeScene, parse_caption, render
from unimm.eval.interleaving import bootstrap_slot_accuracy, evaluate_interleaved
from unimm.models.continuation import Reply
from unimm.train.loop import train

OFFSETS = {"right of": (11, 0), "left of": (-11, 0), "above": (0, -11), "below": (0, 11)}


def _drawn(caption: str, second_at: tuple[int, int] | None = None) -> torch.Tensor:
    """The shapes image [3, 32, 32] in [-1, 1] of a slot caption, its first object at the centre."""
    objects, relation = parse_caption(caption)
    if relation is None:
        scene = ShapeScene((ShapeObject(objects[0][1], objects[0][0], (16, 16), 4),))
    else:
        dx, dy = OFFSETS[relation]
        new = ShapeObject(objects[0][1], objects[0][0], second_at or (16 + dx, 16 + dy), 3)
        scene = ShapeScene((new, ShapeObject(objects[1][1], objects[1][0], (16, 16), 4)), relation)
    x = torch.from_numpy(np.asarray(render(scene), dtype=np.float32))
    return x.permute(2, 0, 1) / 127.5 - 1


class FakeModel:
    """Answers each shapes task with its slots drawn right, or with the second image's objects moved."""

    def __init__(self, shapes_dir, mode: str) -> None:
        data = SimpleNamespace(path=str(shapes_dir), image_size=32, channels=3)
        self.cfg, self.mode, self.tasks = SimpleNamespace(data=data), mode, []

    def eval(self):
        return self

    def interleave(self, prompt: str, generator=None, max_images=4, max_new_tokens=48) -> Reply:
        first, rest = prompt[len("draw ") : prompt.index(". Now add ")], prompt[prompt.index(" add ") + 5 : -1]
        place = {"to its right": "right of", "to its left": "left of", "above it": "above", "below it": "below"}
        second, where = next((rest[: -len(k) - 1], v) for k, v in place.items() if rest.endswith(k))
        slots = [first, f"{second} {where} {first}"]
        if self.mode == "none":
            return Reply(["I cannot draw"], "eos")
        images = [_drawn(slots[0]), _drawn(slots[1])]
        if self.mode == "inconsistent":  # the second image redraws the first object elsewhere
            images[1] = torch.roll(images[1], shifts=(3, 3), dims=(1, 2))
        return Reply([slots[0], images[0], slots[1], images[1]], "eos")


@pytest.mark.parametrize(("mode", "slots", "consistent"), [("right", 1.0, 1.0), ("none", 0.0, 0.0)])
def test_shapes_replies_score_exactly(shapes_dir, mode, slots, consistent):
    suite = suites.Suite("t", 0, 0, 0, interleaved_n=9, bootstrap_reps=50)
    result = evaluate_interleaved(FakeModel(shapes_dir, mode), suite, seed=1)
    r = result["interleaved"]
    assert result["dataset"]["kind"] == "shapes" and r["slot_accuracy"]["n"] == 18
    assert r["slot_accuracy"]["rate"] == slots and r["task_accuracy"]["rate"] == slots
    assert r["consistency"]["rate"] == consistent and r["slot_accuracy"]["bootstrap_ci"] == [slots, slots]
    assert r["stops"] == {"eos": 9} and not r["scored_resized"]


def test_a_second_image_that_moves_the_first_object_is_inconsistent(shapes_dir):
    suite = suites.Suite("t", 0, 0, 0, interleaved_n=6, bootstrap_reps=50)
    r = evaluate_interleaved(FakeModel(shapes_dir, "inconsistent"), suite)["interleaved"]
    assert r["consistency"]["rate"] == 0.0


def test_bootstrap_resamples_whole_tasks():
    low, high = bootstrap_slot_accuracy([(True, True), (False, False), (True, False)], 500, 0)
    assert 0 <= low < 0.5 < high <= 1
    assert bootstrap_slot_accuracy([(True,)] * 4, 50, 0) == [1.0, 1.0]


def test_unimm_eval_interleaved_writes_its_report(digits_dir, tmp_path, monkeypatch):
    small = suites.Suite("interleaved", 0, 0, 0, classifier_steps=30, interleaved_n=4, interleaved_tokens=8)
    monkeypatch.setitem(suites.SUITES, "interleaved", small)
    cfg = tiny_preset(digits_dir, "chameleon", **{"data.interleaved_fraction": 0.5, "model.max_seq_len": 160})
    run = train(cfg, tmp_path / "run", progress=False)
    result = CliRunner().invoke(app, ["eval", str(run), "--suite", "interleaved"])
    assert result.exit_code == 0, result.output
    scores = json.loads((run / "eval" / "eval.json").read_text())["interleaved"]
    assert scores["slot_accuracy"]["n"] >= 8 and 0 <= scores["slot_accuracy"]["rate"] <= 1
    assert len(scores["results"]) == 4 and set(scores["per_kind"]) <= {"digits", "count"}
    assert f"slot_accuracy={scores['slot_accuracy']['rate']:.4g}" in result.output
    assert "| all |" in (run / "eval" / "eval.md").read_text()
