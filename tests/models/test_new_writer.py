"""docs/architecture.md's "Adding a kind" example is a complete writer: its one file, run as written, registers a
kind that trains, saves, reloads, captions and generates with every other part unchanged."""

import re
import types
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from unimm.config import ConfigError, load_config
from unimm.models import UnifiedModel
from unimm.settings import WRITERS
from unimm.train import train

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


@pytest.fixture
def direct_writer():
    text = DOC.read_text().split("### Adding a kind", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert code.startswith("# src/unimm/models/writers/direct.py")
    module = types.ModuleType("direct_writer_example")
    exec(compile(code, str(DOC), "exec"), module.__dict__)
    yield module
    WRITERS._classes.pop("direct"), WRITERS._settings.pop("direct")  # unregister


def test_the_documented_writer_trains_and_samples(digits_dir, tmp_path, direct_writer):
    sets = tiny_overrides(digits_dir, **{"writer.kind": "direct", "data.image_size": 8, "data.channels": 1})
    cfg = load_config(None, sets)
    assert type(cfg.writer).__name__ == "DirectSettings" and cfg.denoiser is None
    model = UnifiedModel.from_pretrained(train(cfg, tmp_path / "run", progress=False))
    assert isinstance(model.writer, direct_writer.DirectWriter)
    images = model.generate(["a handwritten seven"], generator=torch.Generator().manual_seed(0))
    assert images.shape == (1, 1, 8, 8) and images.abs().max() <= 1
    assert isinstance(model.caption(images)[0], str)


def test_without_its_file_the_kind_is_unknown(digits_dir):
    with pytest.raises(ConfigError, match=r"writer.kind.*'direct'.*allowed: ar-codes, connector, latent"):
        load_config(None, tiny_overrides(digits_dir, **{"writer.kind": "direct"}))
