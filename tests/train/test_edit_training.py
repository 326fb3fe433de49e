"""Training on an edit dataset: ``data.path`` at edit triples trains a preset on edits (optionally mixed with
text-to-image and captioning on the targets) and the run edits images."""

import pytest
import torch

from conftest import tiny_preset
from unimm.config import dump_toml, load_config
from unimm.data import load_split
from unimm.data.edits import load_edits
from unimm.models import UnifiedModel
from unimm.train.loop import resolve_data, train
from unimm.train.stream import ExampleStream


@pytest.mark.parametrize("preset", ["transfusion", "chameleon", "show-o"])
def test_preset_trains_on_edits_and_edits_images(edits_dir, tmp_path, preset):
    cfg = tiny_preset(edits_dir, preset, **{"sample.steps": 3, "data.edit_fraction": 0.75})
    out = train(cfg, tmp_path / preset, progress=False)
    model = UnifiedModel.from_pretrained(out)
    test = load_split(edits_dir, "test", 8, 1)
    edited = model.edit(test.sources[:2], test.instructions[:2], generator=torch.Generator().manual_seed(0))
    assert edited.shape == (2, 1, 8, 8) and edited.min() >= -1 and edited.max() <= 1
    assert len(model.caption(test.images[:2])) == 2  # the targets' captions trained too


def test_edit_stream_pairs_each_target_with_its_source_and_instruction(edits_dir):
    cfg = tiny_preset(edits_dir, "chameleon", **{"data.edit_fraction": 0.5, "data.shift": 2})
    data, templates = resolve_data(cfg)
    assert data.sources.shape == data.images.shape and len(data.instructions) == len(data)
    stream = ExampleStream(data, templates, cfg.data, 32, 0)
    images, examples = stream.batch(0)
    edits = [j for j, ex in enumerate(examples) if ex.task == "edit"]
    assert 0 < len(edits) < len(examples), "edit_fraction mixes edits with the other tasks"
    for j in edits:
        i, example, shift = stream.samples(0)[j]
        assert shift == (0, 0) and examples[j].text == data.instructions[i] and example.source is None
        assert torch.equal(images[j], data.images[i]) and torch.equal(examples[j].source, data.sources[i])


def test_multi_object_edits_repeat_in_each_epoch_and_validation_stays_plain(edits_dir):
    """``data.multi_object_repeat = 3``: an epoch draws each edit whose source has >= 2 objects three times and
    the others once; at 1 the stream is the plain one, index for index."""
    cfg = tiny_preset(edits_dir, "chameleon")
    data, templates = resolve_data(cfg)
    multi = {i for i, k in enumerate(data.source_objects) if k >= 2}
    assert 0 < len(multi) < len(data), "the fixture needs scenes with one object and scenes with more"
    plain = ExampleStream(data, templates, cfg.data, 8, 0)
    repeated = ExampleStream(data, templates, cfg.data.model_copy(update={"multi_object_repeat": 3}), 8, 0)
    epoch = len(data) + 2 * len(multi)
    drawn = [repeated._item(g) for g in range(epoch)]
    assert sorted(drawn) == sorted([i for i in range(len(data)) for _ in range(3 if i in multi else 1)])
    assert [plain._item(g) for g in range(len(data))] == [int(i) for i in torch.randperm(
        len(data), generator=torch.Generator().manual_seed(0))]  # fmt: skip
    loaded = load_split(edits_dir, "train", 8, 1)
    assert loaded.source_objects == data.source_objects
    with pytest.raises(ValueError, match="multi_object_repeat"):
        tiny_preset(edits_dir, "chameleon", **{"data.multi_object_repeat": 0})


def test_edits_of_a_named_kind_repeat_in_each_epoch_and_compose_with_multi_object_repeat(edits_dir, tmp_path):
    """``data.edit_kind_repeat = {swap = 3}`` draws each swap three times per epoch; with ``multi_object_repeat``
    the counts multiply; an unknown kind or a count below 1 is refused; the setting survives the run's config."""
    cfg = tiny_preset(edits_dir, "chameleon")
    data, templates = resolve_data(cfg)
    assert data.edit_kinds == [e.edit.kind for e in load_edits(edits_dir, "train")]
    moves = {i for i, k in enumerate(data.edit_kinds) if k == "move"}
    multi = {i for i, k in enumerate(data.source_objects) if k >= 2}
    assert 0 < len(moves) < len(data) and moves & multi and moves - multi
    for update, times in (
        ({"edit_kind_repeat": {"move": 3}}, lambda i: 3 if i in moves else 1),
        (
            {"edit_kind_repeat": {"move": 3}, "multi_object_repeat": 2},
            lambda i: (3 if i in moves else 1) * (2 if i in multi else 1),
        ),
    ):
        stream = ExampleStream(data, templates, cfg.data.model_copy(update=update), 8, 0)
        want = sorted(i for i in range(len(data)) for _ in range(times(i)))
        assert sorted(stream._item(g) for g in range(len(want))) == want
    for bad, match in (("{turn = 2}", "not an edit kind"), ("{swap = 0}", "expected a count")):
        with pytest.raises(ValueError, match=match):
            tiny_preset(edits_dir, "chameleon", **{"data.edit_kind_repeat": bad})
    repeated = tiny_preset(edits_dir, "chameleon", **{"data.edit_kind_repeat": "{move = 3}"})
    assert repeated.data.edit_kind_repeat == {"move": 3}
    (tmp_path / "config.toml").write_text(dump_toml(repeated))
    assert load_config(tmp_path / "config.toml").data.edit_kind_repeat == {"move": 3}
