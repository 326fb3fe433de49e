"""Optional adversarial / perceptual terms of the image tokenizer trainer (off by default)."""

import json

import pytest
import torch

from unimm.config import TokenizerConfig, load_config
from unimm.models.vae import SmallVAE
from unimm.tokenizers.losses import (
    PatchDiscriminator,
    PerceptualLoss,
    d_hinge_loss,
    g_hinge_loss,
    random_conv_features,
)
from unimm.tokenizers.train import build_image_tokenizer, build_tokenizer_losses, load_image_tokenizer, train_tokenizer
from unimm.tokenizers.vqvae import VQVAE


def test_hinge_losses_on_known_values():
    real, fake = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, 1, 2] -> 1; relu(1 + fake) = [0, 1, 2] -> 1
    assert float(d_hinge_loss(real, fake)) == pytest.approx(1.0)
    assert float(d_hinge_loss(torch.full((4,), 5.0), torch.full((4,), -5.0))) == 0.0
    assert float(g_hinge_loss(torch.tensor([1.0, 3.0]))) == pytest.approx(-2.0)


def test_discriminator_output_is_a_logit_map():
    d = PatchDiscriminator(3, hidden=8, layers=2)
    assert d(torch.randn(2, 3, 16, 16)).shape == (2, 1, 4, 4)
    assert PatchDiscriminator(1, hidden=8, layers=2)(torch.randn(2, 1, 28, 28)).shape == (2, 1, 7, 7)


def test_perceptual_loss_zero_for_identical_grows_with_noise_and_feature_net_is_frozen():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 16, 16, generator=gen) * 2 - 1
    noise = torch.randn(x.shape, generator=gen)
    loss = PerceptualLoss(random_conv_features(1, seed=0))
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    d = [float(loss(x + s * noise, x)) for s in (0.05, 0.2, 0.8)]
    assert 0 < d[0] < d[1] < d[2]
    y = (x + 0.1 * noise).requires_grad_(True)
    loss(y, x).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in loss.parameters())
    # seeded: the same features every time
    a, b = random_conv_features(1, seed=3), random_conv_features(1, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def _cfg(digits_dir, *extra):
    over = [
        f'data.path="{digits_dir}"',
        "tokenizer.kind=vq",
        "tokenizer.hidden=8",
        "tokenizer.downsample=2",
        "tokenizer.codebook_size=16",
        "tokenizer.code_dim=4",
        "train.steps=4",
        "train.batch_size=8",
        "train.log_every=1",
        *extra,
    ]
    return load_config(None, over, schema=TokenizerConfig)


@pytest.mark.parametrize("kind", ["vq", "vae"])
def test_train_with_adversarial_and_perceptual_terms(digits_dir, tmp_path, kind):
    extra = [f"tokenizer.kind={kind}", "tokenizer.adversarial_weight=0.1", "tokenizer.adversarial_start=1"]
    cfg = _cfg(digits_dir, *extra, "tokenizer.perceptual_weight=0.5")
    train_tokenizer(cfg, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and "d_loss" not in rows[0] and "perceptual" in rows[0]
    assert all({"d_loss", "g_loss", "perceptual"} <= r.keys() for r in rows[1:])
    model = load_image_tokenizer(tmp_path)
    assert not any("disc" in k or "feature" in k for k in model.state_dict())
    assert model.reconstruct(torch.zeros(1, 1, 8, 8))[0].shape == (1, 1, 8, 8)


@pytest.mark.parametrize("kind", ["vq", "vae"])
def test_default_config_adds_nothing_to_the_tokenizer(digits_dir, kind):
    cfg = _cfg(digits_dir, f"tokenizer.kind={kind}")
    t = cfg.tokenizer
    assert t.adversarial_weight == 0 and t.adversarial_start == 0 and t.perceptual_weight == 0
    cfg.data.channels = 1
    assert build_tokenizer_losses(cfg) == {}
    plain = VQVAE(1, 16, 4, 8, 2) if kind == "vq" else SmallVAE(1, 4, 8, 2)
    assert set(build_image_tokenizer(cfg).state_dict()) == set(plain.state_dict())
    on = _cfg(digits_dir, f"tokenizer.kind={kind}", "tokenizer.adversarial_weight=0.1", "tokenizer.perceptual_weight=1")
    on.data.channels = 1
    assert {"discriminator", "perceptual"} <= build_tokenizer_losses(on).keys()
    assert set(build_image_tokenizer(on).state_dict()) == set(plain.state_dict())
