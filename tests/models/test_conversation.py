"""Conversations in every preset: a batch of multi-turn sequences with several images read and several generated
(one after a read image, one after a generated one) trains a step, and the next image of a conversation is
generated seeing the images of earlier turns, the ones it made included."""

import pytest
import torch

from conftest import PRESETS, tiny_preset
from unimm.models import UnifiedModel
from unimm.tasks import Example, ImagePrompt, Turn, conversation_spans
from unimm.tokenizers.text import TextTokenizer
from unimm.train.stream import make_batch

TEXTS = ["draw it bigger", "here it is", "now a red one", "two", "zero"]
DETERMINISTIC = {
    "sample.image_temperature": 0,
    "sample.choice_temperature": 0,
    "sample.steps": 3,
    "model.max_seq_len": 160,
}


def _model(digits_dir, preset: str) -> UnifiedModel:
    cfg = tiny_preset(digits_dir, preset, **DETERMINISTIC)
    torch.manual_seed(0)
    model = UnifiedModel(cfg, TextTokenizer.train(TEXTS, 300))
    model.prepare(torch.rand(32, 1, 8, 8) * 2 - 1, progress=False, captions=[TEXTS[0]] * 32)
    return model


def _images(n: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return list(torch.rand(n, 1, 8, 8, generator=gen) * 2 - 1)


@pytest.mark.parametrize("preset", PRESETS)
def test_a_conversation_batch_trains_and_the_next_image_sees_earlier_turns(digits_dir, preset):
    model = _model(digits_dir, preset).train()
    a, b, c, d, e = _images(5, 0)
    chat = (
        Turn("user", (a, "draw it bigger")),
        Turn("assistant", ("here it is", b)),
        Turn("user", (c, "now a red one")),
        Turn("assistant", (d, "two", e)),
    )
    document = (Turn("assistant", ("two", a, "zero", b)),)
    examples = [Example("conversation", turns=chat), Example("conversation", turns=document)]
    batch = make_batch(model, torch.zeros(2, 1, 8, 8), examples)
    assert batch.image_generate.tolist() == [False, True, False, True, True, True, True]
    loss, metrics = model(batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and metrics["image_loss"] > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())

    model.eval()
    layout, tok = model.layout, model.tokenizer
    context = conversation_spans(chat[:3], layout, tok)  # the next image follows a made one and two read ones
    prompt = ImagePrompt("chat", context=tuple(context))
    last: list[torch.Tensor] = []  # the backbone's output in the sampler's last pass
    model.backbone.register_forward_hook(lambda module, args, out: last.append(out[0][:, -1].clone()))
    image = model.generate(prompt, cfg_scale=1.0)
    assert image.shape == (1, 1, 8, 8) and image.min() >= -1 and image.max() <= 1
    seen, read = last[-1], model.ctx.read_images
    model.ctx.read_images = lambda images: read(images) + 1.0  # other attached images
    model.generate(prompt, cfg_scale=1.0)
    assert not torch.allclose(seen, last[-1]), "the image does not see the images attached in earlier turns"
