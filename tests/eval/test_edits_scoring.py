"""Edit and interleaved scorers on hand-made images: each failure scores 0 on its own measure."""

import numpy as np
import pytest

from unimm.data.edits import Edit, scene_of
from unimm.data.shapes import ShapeObject, render
from unimm.eval.classifier import ImageClassifier
from unimm.eval.edits import score_edit, score_edits
from unimm.eval.interleaved import (
    classifier_callable,
    count_task,
    digits_task,
    make_tasks,
    score_task,
    score_tasks,
    shapes_task,
)

CIRCLE = ShapeObject("circle", "red", (8, 16), 4)
SQUARE = ShapeObject("square", "blue", (24, 16), 4)
SOURCE = (CIRCLE, SQUARE)


def pixels(*objects: ShapeObject) -> np.ndarray:
    return np.array(render(scene_of(tuple(objects))))


def edit(kind: str, target: tuple[ShapeObject, ...], index: int = 0, **extra) -> Edit:
    return Edit(kind, f"{kind} ...", scene_of(SOURCE), scene_of(target), index, **extra)


def verdict(image: np.ndarray, e: Edit) -> tuple[bool, bool]:
    result = score_edit(image, e)
    return result.edit, result.preservation


def moved(obj: ShapeObject, x: int, y: int) -> ShapeObject:
    return ShapeObject(obj.shape, obj.colour, (x, y), obj.size)


def recoloured(obj: ShapeObject, colour: str) -> ShapeObject:
    return ShapeObject(obj.shape, colour, obj.centre, obj.size)


def test_recolour():
    green = recoloured(CIRCLE, "green")
    e = edit("recolour", (green, SQUARE))
    assert verdict(pixels(green, SQUARE), e) == (True, True)
    assert verdict(pixels(*SOURCE), e) == (False, True)  # nothing done
    assert verdict(pixels(recoloured(CIRCLE, "yellow"), SQUARE), e) == (False, True)  # wrong colour
    assert verdict(pixels(green, recoloured(SQUARE, "red")), e) == (True, False)  # another object changed too
    assert verdict(pixels(green, SQUARE, ShapeObject("triangle", "purple", (16, 5), 3)), e) == (True, False)  # extra


def test_move():
    down = moved(CIRCLE, 8, 24)
    e = edit("move", (down, SQUARE), direction="down")
    assert verdict(pixels(down, SQUARE), e) == (True, True)
    assert verdict(pixels(*SOURCE), e) == (False, True)
    assert verdict(pixels(moved(CIRCLE, 8, 8), SQUARE), e) == (False, True)  # wrong direction
    assert verdict(pixels(down, moved(SQUARE, 24, 8)), e) == (True, False)  # the square moved as well


def test_add():
    triangle = ShapeObject("triangle", "green", (16, 5), 3)
    e = edit("add", (*SOURCE, triangle), index=2)
    assert verdict(pixels(*SOURCE, triangle), e) == (True, True)
    assert verdict(pixels(*SOURCE, moved(triangle, 16, 27)), e) == (True, True)  # any free place
    assert verdict(pixels(*SOURCE), e) == (False, True)
    assert verdict(pixels(*SOURCE, recoloured(triangle, "red")), e) == (False, True)
    assert verdict(pixels(CIRCLE, triangle), e) == (True, False)  # the square vanished


def test_remove():
    e = edit("remove", (SQUARE,))
    assert verdict(pixels(SQUARE), e) == (True, True)
    assert verdict(pixels(*SOURCE), e) == (False, True)
    assert verdict(pixels(CIRCLE), e) == (False, False)  # the wrong object removed


def test_swap():
    target = (moved(CIRCLE, 24, 16), moved(SQUARE, 8, 16))
    e = edit("swap", target, other=1)
    assert verdict(pixels(*target), e) == (True, True)
    assert verdict(pixels(*SOURCE), e) == (False, True)
    assert verdict(pixels(target[0]), e) == (False, True)  # the square lost: the edit's failure alone


def test_pixel_distance_outside_the_edit_counts():
    green = recoloured(CIRCLE, "green")
    image = pixels(green, SQUARE)
    image[image.sum(-1) == 3 * 255] = 200  # a grey background: objects unchanged, pixels not
    result = score_edit(image, edit("recolour", (green, SQUARE)))
    assert result.edit and result.objects_kept and result.pixel_distance > 8 and not result.preservation
    assert score_edit(image, edit("recolour", (green, SQUARE)), pixel_threshold=100).preservation


def why(image: np.ndarray, e: Edit) -> tuple[str | None, str | None]:
    result = score_edit(image, e)
    return result.edit_failure, result.preservation_failure


def test_each_kind_of_mistake_names_its_reason():
    """A failed measure says why: each kind of mistake gives its own reason, a right image none."""
    green = recoloured(CIRCLE, "green")
    e = edit("recolour", (green, SQUARE))
    assert why(pixels(green, SQUARE), e) == (None, None)
    square_as_circle = ShapeObject("circle", "blue", SQUARE.centre, SQUARE.size)
    assert why(pixels(green, square_as_circle), e) == (None, "shape")  # the kept square drawn round
    assert why(pixels(green, recoloured(SQUARE, "red")), e) == (None, "colour")
    assert why(pixels(green, moved(SQUARE, 24, 26)), e) == (None, "place")
    assert why(pixels(green), e) == (None, "missing")
    assert why(pixels(green, SQUARE, ShapeObject("triangle", "purple", (16, 5), 3)), e) == (None, "extra")
    # the edited circle drawn square: the edit fails, and preservation fails on the same misdrawn object
    green_square = ShapeObject("square", "green", CIRCLE.centre, CIRCLE.size)
    assert why(pixels(green_square, SQUARE), e) == ("shape", "edited shape")
    assert why(pixels(recoloured(CIRCLE, "yellow"), SQUARE), e) == ("colour", None)
    down = moved(CIRCLE, 8, 24)
    assert why(pixels(moved(CIRCLE, 8, 8), SQUARE), edit("move", (down, SQUARE), direction="down"))[0] == "place"
    triangle = ShapeObject("triangle", "green", (16, 5), 3)
    add = edit("add", (*SOURCE, triangle), index=2)
    assert why(pixels(*SOURCE, ShapeObject("square", "green", (16, 5), 3)), add) == ("shape", None)
    assert why(pixels(*SOURCE), add) == ("missing", None)
    assert why(pixels(*SOURCE), edit("remove", (SQUARE,))) == ("not removed", None)
    image = pixels(green, SQUARE)
    image[image.sum(-1) == 3 * 255] = 200
    assert why(image, e) == (None, "pixels")
    out = score_edits([pixels(green, square_as_circle), pixels(green, SQUARE), pixels(*SOURCE)], [e] * 3)
    assert out["failures"]["preservation"]["shape"] == 1 and sum(out["failures"]["preservation"].values()) == 1
    assert out["failures"]["edit"]["place"] == 0 and sum(out["failures"]["edit"].values()) == 1
    assert out["per_kind"]["recolour"]["failures"] == out["failures"]


def test_aggregate_rates_and_intervals():
    green = recoloured(CIRCLE, "green")
    e = edit("recolour", (green, SQUARE))
    out = score_edits([pixels(green, SQUARE), pixels(*SOURCE)], [e, e])
    assert out["edit"]["rate"] == 0.5 and out["preservation"]["rate"] == 1.0 and out["both"]["n"] == 2
    lo, hi = out["edit"]["ci"]
    assert 0 < lo < 0.5 < hi < 1 and len(out["results"]) == 2 and out["per_kind"]["recolour"]["edit"]["n"] == 2
    with pytest.raises(ValueError, match="2 images but 1 edits"):
        score_edits([pixels(*SOURCE)] * 2, [e])


# ---------------------------------------------------------------------------------------------- interleaved


def digit(value: int) -> np.ndarray:
    return np.full((8, 8), value, dtype=np.uint8)


def fake_classify(image: np.ndarray) -> int:
    return int(image[0, 0])


def test_task_prompts_and_slots():
    assert digits_task(2024).slots == (2, 0, 2, 4)
    assert digits_task(2024).prompt == "write the digits of 2024, one image each"
    assert count_task(3, 3).prompt == "three, then the next one, then the next" and count_task(3, 3).slots == (3, 4, 5)
    task = shapes_task(("red", "circle"), ("blue", "square"), "right of")
    assert task.prompt == "draw a red circle. Now add a blue square to its right."
    assert task.slots == ("a red circle", "a blue square right of a red circle")
    assert make_tasks(9, seed=1) == make_tasks(9, seed=1) != make_tasks(9, seed=2)
    assert {t.kind for t in make_tasks(9)} == {"digits", "count", "shapes"}
    with pytest.raises(ValueError):
        count_task(8, 3)


def test_digit_slots_with_a_fake_classifier():
    task = digits_task(2024)
    assert score_task(task, [digit(d) for d in (2, 0, 2, 4)], fake_classify).slots == (True,) * 4
    assert score_task(task, [digit(d) for d in (2, 0, 2, 5)], fake_classify).slots == (True, True, True, False)
    assert score_task(task, [digit(d) for d in (2, 0)], fake_classify).slots == (True, True, False, False)
    out = score_tasks(
        [task, count_task(3, 3)], [[digit(d) for d in (2, 0, 4, 2)], [digit(3), digit(4), digit(5)]], fake_classify
    )
    assert out["slot_accuracy"]["rate"] == 5 / 7 and out["task_accuracy"]["rate"] == 0.5
    assert out["consistency"]["n"] == 0 and out["per_kind"]["count"]["task_accuracy"]["rate"] == 1.0
    with pytest.raises(ValueError, match="classify"):
        score_task(task, [digit(2)])


def test_shapes_slots_and_consistency():
    task = shapes_task(("red", "circle"), ("blue", "square"), "right of")
    first = pixels(CIRCLE)
    result = score_task(task, [first, pixels(CIRCLE, SQUARE)])
    assert result.slots == (True, True) and result.consistency is True
    result = score_task(task, [first, pixels(moved(CIRCLE, 8, 20), SQUARE)])  # still right of it, but moved
    assert result.slots == (True, True) and result.consistency is False
    result = score_task(task, [first, pixels(recoloured(CIRCLE, "orange"), SQUARE)])
    assert result.slots == (True, False) and result.consistency is False
    assert score_task(task, [first, pixels(CIRCLE, moved(SQUARE, 8, 26))]).slots == (True, False)  # below, not right
    assert score_task(task, [first]).consistency is False


def test_shapes_slots_keep_their_checks_and_the_report_counts_them():
    """Each kind of slot mistake fails its own GenEval check, and the per-slot table counts them."""
    from unimm.eval.interleaving_report import interleaved_markdown

    task = shapes_task(("red", "circle"), ("blue", "square"), "right of")
    right = score_task(task, [pixels(CIRCLE), pixels(CIRCLE, SQUARE)])
    assert right.checks[0] == {"object": True, "count": True, "colour": True, "position": None, "overall": True}
    assert right.checks[1]["position"] is True
    wrong = score_task(task, [pixels(recoloured(CIRCLE, "green")), pixels(moved(SQUARE, 8, 26), CIRCLE)])
    assert wrong.checks[0]["colour"] is False and wrong.checks[0]["object"] is False
    assert wrong.checks[0]["count"] is True
    assert wrong.checks[1]["position"] is False and wrong.checks[1]["object"] is True
    missing = score_task(task, [pixels(CIRCLE, SQUARE)])  # two objects in slot 1, no slot 2
    assert missing.checks[0]["count"] is False and missing.checks[1] is None
    out = score_tasks([task] * 3, [[pixels(CIRCLE), pixels(CIRCLE, SQUARE)], [pixels(recoloured(CIRCLE, "green")),
                      pixels(moved(SQUARE, 8, 26), CIRCLE)], [pixels(CIRCLE, SQUARE)]])  # fmt: skip
    first, second = out["shapes_slot_checks"]
    assert first["colour"]["rate"] == 2 / 3 and first["count"]["rate"] == 2 / 3 and first["missing"] == 0
    assert "position" not in first  # no single-object slot has a relation
    assert second["position"]["rate"] == 1 / 3 and second["position"]["n"] == 3 and second["missing"] == 1
    assert second["object"]["rate"] == 2 / 3  # the missing image fails every check
    digits = score_tasks([digits_task(12)], [[digit(1), digit(2)]], fake_classify)
    assert digits["shapes_slot_checks"] == [] and digits["results"][0]["checks"] == ()
    result = {
        "dataset": {"tasks": 3, "kind": "shapes"},
        "seed": 0,
        "interleaved": {**out, "stops": {"eos": 3}, "scored_resized": False},
    }
    result["interleaved"]["slot_accuracy"]["bootstrap_ci"] = [0.0, 1.0]
    for row in result["interleaved"]["results"]:
        row.update(prompt=task.prompt, text="", images=2)
    md = interleaved_markdown(result, "t")
    assert "| slot | object | count | colour | position | overall | no image |" in md
    rows = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith(("| 1 |", "| 2 |"))}
    first_row = rows["| 1"]
    assert first_row.startswith("| 1 | 66.7% [") and "| n/a | 33.3% [" in first_row and first_row.endswith("| 0 |")
    assert rows["| 2"].count("(n=3)") == 5 and rows["| 2"].endswith("| 1 |")


def test_classifier_callable_returns_a_class():
    classify = classifier_callable(ImageClassifier(1, 8, 10))
    assert 0 <= classify(digit(3)) < 10


def test_codec_ceiling_scores_the_true_targets_through_the_codec(edits_dir):
    """A lossless codec passes every test edit; one that blanks its images loses preservation: the ceiling is
    the codec's, not the model's."""
    from types import SimpleNamespace

    import torch

    from unimm.data.edits import load_edits
    from unimm.eval.editing import _to_pixels, codec_ceiling

    test = load_edits(edits_dir, "test")
    cfg = SimpleNamespace(data=SimpleNamespace(channels=3, image_size=32))

    def model_with(decode):
        codec = SimpleNamespace(encode=lambda x: x * 2, decode=decode)
        return SimpleNamespace(cfg=cfg, writer=SimpleNamespace(codec=codec))

    targets = _to_pixels(np.stack([t.target for t in test]), model_with(None))
    edits = [t.edit for t in test]
    lossless = codec_ceiling(model_with(lambda z: z / 2), targets, edits, 32)
    assert lossless["edit"]["rate"] == 1 and lossless["preservation"]["rate"] == 1 and lossless["pixel_distance"] < 1
    blank = codec_ceiling(model_with(lambda z: torch.ones_like(z)), targets, edits, 32)
    assert blank["preservation"]["rate"] < 0.5 and blank["pixel_distance"] > lossless["pixel_distance"]
    assert codec_ceiling(SimpleNamespace(cfg=cfg, writer=SimpleNamespace()), targets, edits, 32) is None


def test_a_tokenizer_trained_on_edits_reports_its_edit_ceiling(edits_dir, tmp_path):
    """``unimm tokenizer train`` on an edit dataset scores the round trip of the test targets: what a model that
    writes through this tokenizer could reach at most (metrics.json and the command's last line)."""
    import json

    from typer.testing import CliRunner

    from unimm.cli import app

    sets = [f"data.path={edits_dir}", "train.steps=2", "tokenizer.hidden=8", "tokenizer.code_dim=3"]
    result = CliRunner().invoke(
        app,
        [
            "tokenizer",
            "train",
            "configs/tok/vae.toml",
            "--out",
            str(tmp_path / "t"),
            *[a for s in sets for a in ("--set", s)],
        ],
    )
    assert result.exit_code == 0, result.output
    ceiling = json.loads((tmp_path / "t" / "metrics.json").read_text())["edit_ceiling"]
    from unimm.data.edits import load_edits

    assert ceiling["test_edits"] == len(load_edits(edits_dir, "test")) == ceiling["preservation"]["n"]
    assert ceiling["pixel_distance"] > 1  # two steps of training: far from a lossless round trip
    assert f"preservation {ceiling['preservation']['rate']:.1%}" in result.output, result.output
