"""The writers' held-out image loss (``Writer.eval_loss`` through ``UnifiedModel.image_loss``), one tiny model per
writer kind: deterministic for a seed, one finite number per image that no other image of the call changes, lower
after a few training steps on the data; autoregressive codes: exactly the teacher-forced training loss."""

import pytest
import torch

from conftest import tiny_preset
from unimm.data import load_split, templates_for
from unimm.models import UnifiedModel
from unimm.tasks import Example
from unimm.tokenizers.text import TextTokenizer
from unimm.train.loop import make_batch

PIXELS = {"codec": '{kind = "pixels", patch_size = 2}'}  # continuous writers: raw 2x2 patches
VARIANTS = {  # name -> (preset, overrides): every writer kind, both denoisers
    "ar-codes": ("chameleon", {}),
    "masked-codes": ("show-o", {}),
    "latent-ddpm": ("transfusion", PIXELS),
    "latent-flow-vae": ("quick", {}),
    "mar": ("mar", {**PIXELS, "sample.head_steps": 3}),
    "connector": ("connector", {**PIXELS, "writer.train": '"joint"'}),  # frozen: 3 pre-training steps learn little
}


@pytest.fixture(scope="module")
def digits(digits_dir):
    """(train images, their prompts, test images, their prompts): each image with its class's first caption."""
    train, test = load_split(digits_dir, "train", 8, 1), load_split(digits_dir, "test", 8, 1)
    templates = templates_for(train)

    def prompts(data, n):
        return [templates.all_captions(int(y))[0] for y in data.labels[:n]]

    return train.images[:32], prompts(train, 32), test.images[:6], prompts(test, 6)


def _model(digits_dir, digits, variant: str) -> UnifiedModel:
    preset, over = VARIANTS[variant]
    images, prompts, _, _ = digits
    torch.manual_seed(0)
    model = UnifiedModel(tiny_preset(digits_dir, preset, **over), TextTokenizer.train(prompts, 300))
    model.prepare(images, progress=False, captions=prompts)
    return model.eval()


def _train(model: UnifiedModel, images: torch.Tensor, prompts: list[str], steps: int = 12) -> None:
    """A few steps of the text-to-image loss on (images, prompts)."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    batch = make_batch(model, images, [Example("t2i", p) for p in prompts])
    model.train()
    for step in range(steps):
        loss, _ = model(batch, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _loss(model, images, prompts, seed: int = 0) -> torch.Tensor:
    return model.image_loss(images, prompts, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_image_loss_is_per_image_deterministic_and_falls_with_training(digits_dir, digits, variant):
    model = _model(digits_dir, digits, variant)
    images, prompts, test_images, test_prompts = digits
    fresh = _loss(model, test_images, test_prompts)
    assert fresh.shape == (6,) and torch.isfinite(fresh).all() and (fresh > 0).all()
    assert torch.equal(fresh, _loss(model, test_images, test_prompts))  # the same seed: the same numbers
    if variant != "ar-codes":  # the other writers draw noise or masks from the generator
        assert not torch.equal(fresh, _loss(model, test_images, test_prompts, seed=1))
    alone = _loss(model, test_images[3:], test_prompts[3:])  # other images (and padding) do not change an image's
    torch.testing.assert_close(alone, fresh[3:], rtol=1e-4, atol=1e-5)
    assert model.training is False
    _train(model, images, prompts)
    trained = _loss(model, test_images, test_prompts)
    assert trained.mean() < 0.95 * fresh.mean(), (fresh, trained)


def test_ar_codes_loss_is_the_teacher_forced_nll_of_each_image(digits_dir, digits):
    """Equal to the training loss of each image alone in the text-to-image layout (one full forward each), so
    per image it is the mean code NLL in nats; prompts of different lengths make the batch padded."""
    model = _model(digits_dir, digits, "ar-codes")
    images, prompts, _, _ = digits
    _train(model, images, prompts, steps=4)
    prompts = ["a handwritten seven", prompts[1], "seven", prompts[3]]
    got = _loss(model, images[:4], prompts, seed=5)
    with torch.no_grad():
        one = [model(make_batch(model, images[i : i + 1], [Example("t2i", p)]))[1]["image_loss"]
               for i, p in enumerate(prompts)]  # fmt: skip
    torch.testing.assert_close(got, torch.stack(one), rtol=1e-5, atol=1e-6)
    assert float(got.mean()) < torch.log(torch.tensor(model.writer.num_codes, dtype=torch.float))


def test_a_writer_without_a_held_out_loss_says_so(digits_dir, digits, monkeypatch):
    from unimm.models.contracts import Writer

    model = _model(digits_dir, digits, "latent-flow-vae")
    monkeypatch.setattr(type(model.writer), "eval_loss", Writer.eval_loss)
    with pytest.raises(NotImplementedError, match="writer kind 'latent' defines no held-out image loss"):
        model.image_loss(digits[2][:2], digits[3][:2])
    with pytest.raises(ValueError, match="one prompt"):
        model.image_loss(digits[2][:2], digits[3][:1])
