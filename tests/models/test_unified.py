"""UnifiedModel (transfusion layout): loss, understanding, generation, persistence."""

import pytest
import torch

from conftest import tiny_overrides
from unimm.config import load_config
from unimm.models import UnifiedModel
from unimm.tasks import Example
from unimm.tokenizers.text import TextTokenizer
from unimm.train.loop import make_batch


def _model(digits_dir, **extra) -> UnifiedModel:
    cfg = load_config(None, tiny_overrides(digits_dir, **{"data.image_size": 8, "data.channels": 1, **extra}))
    tok = TextTokenizer.train(["a handwritten seven", "what digit is this?", "seven", "the digit 7"], 300)
    torch.manual_seed(0)
    return UnifiedModel(cfg, tok)


EXAMPLES = [
    Example("t2i", "a handwritten seven"),
    Example("t2i", "the digit 7", drop_condition=True),
    Example("caption", "a handwritten seven"),
    Example("vqa", "what digit is this?", "seven"),
]


@pytest.mark.parametrize("denoiser", ["flow", "ddpm"])
def test_loss_has_text_and_image_parts_and_backprops(digits_dir, denoiser):
    model = _model(digits_dir, **{"denoiser.kind": denoiser})
    batch = make_batch(model, torch.rand(4, 1, 8, 8) * 2 - 1, EXAMPLES)
    loss, metrics = model(batch, torch.Generator().manual_seed(0))
    assert metrics["text_loss"] > 0 and metrics["image_loss"] > 0
    loss.backward()
    assert model.writer.embed.proj.weight.grad.abs().sum() > 0
    assert model.backbone.lm_head.weight.grad.abs().sum() > 0
    assert model.writer.head.proj.weight.grad.abs().sum() > 0


def test_read_images_are_clean_and_only_generated_images_get_image_loss(digits_dir):
    model = _model(digits_dir)
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    only_read = make_batch(model, images[2:], EXAMPLES[2:])
    _, metrics = model(only_read, torch.Generator().manual_seed(0))
    assert metrics["image_loss"] == 0
    # the understanding loss does not depend on the noise draw: the image is read clean
    a = model(only_read, torch.Generator().manual_seed(1))[1]["text_loss"]
    b = model(only_read, torch.Generator().manual_seed(2))[1]["text_loss"]
    assert a == b


def test_caption_cached_equals_uncached(digits_dir):
    model = _model(digits_dir).eval()
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    for question in (None, "what digit is this?"):
        cached = model.caption(images, question=question, max_new_tokens=6)
        uncached = model.caption(images, question=question, max_new_tokens=6, use_cache=False)
        assert cached == uncached


def test_batched_caption_equals_one_by_one(digits_dir):
    model = _model(digits_dir).eval()
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    assert model.caption(images) == [model.caption(images[i : i + 1])[0] for i in range(3)]


@pytest.mark.parametrize("sampler", ["flow_euler", "flow_heun"])
def test_generate_shapes_range_and_determinism(digits_dir, sampler):
    model = _model(digits_dir).eval()
    a = model.generate(["a handwritten seven", "seven"], sampler=sampler, generator=torch.Generator().manual_seed(0))
    b = model.generate(["a handwritten seven", "seven"], sampler=sampler, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 1, 8, 8) and a.min() >= -1 and a.max() <= 1
    torch.testing.assert_close(a, b)


def test_generate_with_ddpm_objective_and_cfg_off(digits_dir):
    model = _model(digits_dir, **{"denoiser.kind": "ddpm", "sample.sampler": "ddpm"}).eval()
    out = model.generate(["seven"], cfg_scale=1.0, steps=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, 8, 8) and torch.isfinite(out).all()


def test_overlong_prompt_is_one_clear_error(digits_dir):
    model = _model(digits_dir, **{"model.max_seq_len": 12}).eval()
    with pytest.raises(ValueError, match="max_seq_len"):
        model.generate(["a handwritten seven " * 5])


def test_save_and_load_pretrained_round_trip(digits_dir, tmp_path):
    model = _model(digits_dir).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = UnifiedModel.from_pretrained(tmp_path / "m")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    assert loaded.caption(images) == model.caption(images)


def test_truncated_weights_give_clear_error(digits_dir, tmp_path):
    model = _model(digits_dir)
    path = model.save_pretrained(tmp_path / "m") / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        UnifiedModel.from_pretrained(tmp_path / "m")
