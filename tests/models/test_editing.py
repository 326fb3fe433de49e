"""Editing in every preset: an edit example trains (loss on the target image only) and ``model.edit`` generates
an image that conditions on the source read earlier in the same sequence."""

import pytest
import torch

from conftest import PRESETS, tiny_preset
from unimm.models import UnifiedModel
from unimm.tasks import Example
from unimm.tokenizers.text import TextTokenizer
from unimm.train.stream import make_batch

TEXTS = ["make the circle blue", "remove the square", "a red circle"]
DETERMINISTIC = {"sample.image_temperature": 0, "sample.choice_temperature": 0, "sample.steps": 3}


def _model(digits_dir, preset: str) -> UnifiedModel:
    cfg = tiny_preset(digits_dir, preset, **DETERMINISTIC)
    torch.manual_seed(0)
    model = UnifiedModel(cfg, TextTokenizer.train(TEXTS, 300))
    model.prepare(torch.rand(32, 1, 8, 8) * 2 - 1, progress=False, captions=[TEXTS[2]] * 32)
    return model


@pytest.mark.parametrize("preset", PRESETS)
def test_edit_trains_and_the_edited_image_sees_its_source(digits_dir, preset):
    model = _model(digits_dir, preset).train()
    sources, targets = torch.rand(2, 1, 8, 8) * 2 - 1, torch.rand(2, 1, 8, 8) * 2 - 1
    examples = [Example("edit", TEXTS[0], source=sources[0]), Example("edit", TEXTS[1], source=sources[1])]
    loss, metrics = model(make_batch(model, targets, examples), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and metrics["image_loss"] > 0
    model.eval()
    last: list[torch.Tensor] = []  # the backbone's output in the sampler's last pass
    model.backbone.register_forward_hook(lambda module, args, out: last.append(out[0][:, -1].clone()))
    edited = model.edit(sources, TEXTS[:2], generator=torch.Generator().manual_seed(0))
    assert edited.shape == sources.shape and edited.min() >= -1 and edited.max() <= 1
    seen, read = last[-1], model.ctx.read_images
    model.ctx.read_images = lambda images: read(images) + 1.0  # another source (tiny codecs code noise alike)
    model.edit(sources, TEXTS[:2], generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(seen, last[-1]), "the edited image does not see its source"
    assert model.edit(sources[1:], TEXTS[1]).shape == (1, 1, 8, 8)
