"""Shape edits: deterministic, split-clean, each kind exactly its change, unambiguous, stored and read back."""

import json
import random
import re
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from unimm.cli import app
from unimm.data import edits, shapes
from unimm.data.prepare import split_assignment
from unimm.eval.edits import score_edits

N = 400


@pytest.fixture(scope="module")
def made() -> list[edits.Edit]:
    return edits.make_edits(N, seed=0)


def test_same_seed_same_edits(made):
    assert edits.make_edits(N, seed=0) == made
    assert [e.instruction for e in edits.make_edits(50, seed=1)] != [e.instruction for e in made[:50]]


def test_sources_and_splits_are_the_shapes_datasets(made):
    scenes = [scene for _, scene in shapes.generate(N, seed=0)]
    splits = split_assignment(N, 0)
    assert len(made) > 0.95 * N and {e.split for e in made} == {"train", "val", "test"}
    for edit in made:
        assert edit.source == scenes[edit.scene] and edit.split == splits[edit.scene]


def test_held_out_scenes_never_train(made):
    held = {edits.scene_key(s) for e in made if e.split != "train" for s in (e.source, e.target)} - {()}
    train = {edits.scene_key(s) for e in made if e.split == "train" for s in (e.source, e.target)}
    assert not held & train


def test_each_kind_is_exactly_its_change(made):
    step = edits.move_step(32)
    for e in made:
        src, tgt, i = e.source.objects, e.target.objects, e.object
        if e.kind == "recolour":
            assert tgt[i].colour != src[i].colour and tgt[i].colour in e.instruction
            assert tgt == src[:i] + (replace(src[i], colour=tgt[i].colour),) + src[i + 1 :]
        elif e.kind == "move":
            dx, dy = edits.DIRECTIONS[e.direction]
            moved = replace(src[i], centre=(src[i].centre[0] + dx * step, src[i].centre[1] + dy * step))
            assert tgt == src[:i] + (moved,) + src[i + 1 :]
        elif e.kind == "add":
            assert tgt[:-1] == src and i == len(src) and e.instruction == f"add a {tgt[i].name}"
            assert tgt[i].name not in {o.name for o in src}
        elif e.kind == "remove":
            assert tgt == src[:i] + src[i + 1 :]
        else:
            j = e.other
            assert {i, j} == {0, 1} and len(src) == 2
            assert tgt[i] == replace(src[i], centre=src[j].centre) and tgt[j] == replace(src[j], centre=src[i].centre)
        assert edits.fits(tgt)
    assert {e.kind for e in made} == set(edits.EDIT_KINDS)


def test_ground_truth_is_self_consistent(made):
    """The rendered target reads back as the target scene, and the scorer gives it edit 1, preservation 1."""
    for e in made:
        found = shapes.detect_objects(np.asarray(shapes.render(e.target)))
        assert sorted((d.name, d.centre, d.size) for d in found) == sorted(
            (o.name, o.centre, o.size) for o in e.target.objects
        )
    result = score_edits([np.asarray(shapes.render(e.target)) for e in made], made)
    assert result["edit"]["rate"] == 1.0 and result["preservation"]["rate"] == 1.0 and result["pixel_distance"] == 0.0
    assert set(result["per_kind"]) == set(edits.EDIT_KINDS)


def _named(instruction: str) -> list[str]:
    """The object names an instruction refers to ("the circle", "the red square")."""
    colours, kinds = "|".join(shapes.COLOURS), "|".join(shapes.SHAPES)
    return re.findall(rf"the ((?:(?:{colours}) )?(?:{kinds}))\b", instruction)


def test_instructions_name_exactly_one_object(made):
    for e in (e for e in made if e.kind != "add"):
        names = _named(e.instruction)
        assert len(names) == (2 if e.kind == "swap" else 1)
        for name in names:
            assert sum(name in (o.shape, o.name) for o in e.source.objects) == 1, e.instruction


def test_ambiguous_scenes_get_no_named_edit():
    red, blue = shapes.ShapeObject("circle", "red", (8, 8), 3), shapes.ShapeObject("circle", "blue", (22, 22), 3)
    assert edits.reference((red, blue), 0) == "red circle"
    twins = shapes.ShapeScene((red, replace(red, centre=(22, 22))))
    assert edits.reference(twins.objects, 0) is None
    for seed in range(30):
        edit = edits.make_edit(twins, random.Random(seed))
        assert edit is not None and edit.kind == "add"


def test_write_load_round_trip_and_inspect(tmp_path, made):
    root = tmp_path / "shape_edits"
    edits.main(["--out", str(root), "--n", "30"])
    first = (root / edits.EDITS_FILE).read_bytes()
    edits.main(["--out", str(root), "--n", "30", "--force"])
    assert (root / edits.EDITS_FILE).read_bytes() == first
    loaded = edits.load_edits(root)
    assert [x.edit for x in loaded] == edits.make_edits(30)
    for x in loaded:
        assert np.array_equal(x.target, np.asarray(shapes.render(x.edit.target)))
        assert np.array_equal(x.source, np.asarray(shapes.render(x.edit.source)))
    assert {x.edit.split for x in edits.load_edits(root, "test")} == {"test"}
    result = CliRunner().invoke(app, ["data", "inspect", str(root)])
    assert result.exit_code == 0, result.output
    assert "shape-edits" in result.output and "document=30" in result.output


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("json", "edits.jsonl:2: invalid JSON"),
        ("row", "edits.jsonl:2: malformed edit row"),
        ("index", "edits.jsonl:2: malformed edit row .*object index 7"),
        ("missing", "edits.jsonl:2: missing image {file}"),
        ("corrupt", "edits.jsonl:2: corrupt image {file}"),
    ],
)
def test_bad_input_is_one_line_naming_file_and_line(tmp_path, made, damage, message):
    edits.write_edits(tmp_path, made[:3])
    listing = tmp_path / edits.EDITS_FILE
    lines = listing.read_text().splitlines(keepends=True)
    file = json.loads(lines[1])["target_file"]
    if damage == "json":
        lines[1] = lines[1][:-5] + "\n"
    elif damage == "row":
        row = json.loads(lines[1])
        del row["target"]
        lines[1] = json.dumps(row) + "\n"
    elif damage == "index":
        lines[1] = json.dumps({**json.loads(lines[1]), "object": 7}) + "\n"
    elif damage == "missing":
        (tmp_path / file).unlink()
    else:
        (tmp_path / file).write_bytes(b"not a png")
    listing.write_text("".join(lines))
    with pytest.raises(ValueError, match=message.format(file=file)) as err:
        edits.load_edits(tmp_path)
    assert "\n" not in str(err.value)


def test_counterparts_aim_the_same_kind_at_another_object(made):
    """With counterparts every edit made without them is kept as it was (val / test included), and each extra
    edit is a train edit of the same kind and source as scene i's, aimed at another object, its change exact."""
    twins = edits.make_edits(N, seed=0, counterparts=True)
    assert [e for e in twins if e.scene < N] == made
    extra = [e for e in twins if e.scene >= N]
    by_scene = {e.scene: e for e in made}
    assert len(extra) > 0.2 * N
    for twin in extra:
        first = by_scene[twin.scene - N]
        assert twin.split == "train" == first.split and twin.kind == first.kind in edits.COUNTERPART_KINDS
        assert twin.source == first.source and twin.object != first.object and twin.instruction != first.instruction
    kinds = {e.scene: e.kind for e in extra}
    multi = [e for e in made if e.split == "train" and e.kind in edits.COUNTERPART_KINDS and len(e.source.objects) > 1]
    assert len(kinds) > 0.9 * len(multi)  # nearly every eligible edit gets one (some other object cannot be named)
    test_each_kind_is_exactly_its_change(twins)
    test_held_out_scenes_never_train(twins)
