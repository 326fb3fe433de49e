"""Training on an edit dataset: ``data.path`` at edit triples trains a preset on edits (optionally mixed with
text-to-image and captioning on the targets) and the run edits images."""

import pytest
import torch

from conftest import tiny_preset
from unimm.data import load_split
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
