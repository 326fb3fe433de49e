"""VQ-VAE / KL-VAE image tokenizers and `unimm tokenizer train`."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from unimm.cli import app
from unimm.config import ConfigError, TokenizerConfig, load_config
from unimm.tokenizers.train import load_image_tokenizer, train_tokenizer
from unimm.tokenizers.vqvae import VQVAE

CONFIGS = Path(__file__).parents[2] / "configs" / "tok"


def test_shapes_and_encode_leaves_codebook_alone():
    model = VQVAE(3, codebook_size=32, code_dim=8, hidden=8, downsample=4).train()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    before = model.quantizer.codebook.clone()
    idx = model.encode(x)
    assert idx.shape == (2, 4, 4) and idx.max() < 32
    assert torch.equal(model.quantizer.codebook, before)
    assert model.decode(idx).shape == x.shape
    recon, loss, metrics = model(x)
    assert recon.shape == x.shape and loss > 0 and {"mse", "psnr", "usage", "perplexity"} <= metrics.keys()


def _tok_cfg(digits_dir, kind, steps=150):
    over = [
        f'data.path="{digits_dir}"',
        f"tokenizer.kind={kind}",
        "tokenizer.hidden=16",
        "tokenizer.downsample=2",
        "tokenizer.codebook_size=32",
        "tokenizer.code_dim=4",
        f"train.steps={steps}",
        "train.log_every=50",
    ]
    return load_config(None, over, schema=TokenizerConfig)


@pytest.mark.parametrize("kind", ["vq", "vae"])
def test_training_improves_reconstruction_and_round_trips_through_disk(digits_dir, tmp_path, kind):
    result = train_tokenizer(_tok_cfg(digits_dir, kind), tmp_path / kind, progress=False)
    assert result["val"]["mse"] < 0.5 * result["val_untrained"]["mse"]
    saved = json.loads((tmp_path / kind / "metrics.json").read_text())
    assert saved["val"]["psnr"] == pytest.approx(result["val"]["psnr"])
    model = load_image_tokenizer(tmp_path / kind)
    x = torch.zeros(1, 1, 8, 8)
    recon, codes = model.reconstruct(x)
    assert recon.shape == x.shape and (codes is None) == (kind == "vae")
    if kind == "vq":
        assert result["val"]["usage"] > 0.1 and result["val"]["perplexity"] > 2


def test_a_video_dataset_trains_the_tokenizer_on_its_frames(clips_dir, tmp_path):
    """The per-frame codec a video run can load (``codec.tokenizer``): trained and validated on the clips' frames."""
    result = train_tokenizer(_tok_cfg(clips_dir, "vq", steps=20), tmp_path / "vq", progress=False)
    saved = load_config(tmp_path / "vq" / "config.toml", schema=TokenizerConfig)
    assert saved.data.channels == 1 and saved.data.image_size == 8 and result["val"]["mse"] > 0
    assert load_image_tokenizer(tmp_path / "vq").reconstruct(torch.zeros(3, 1, 8, 8))[0].shape == (3, 1, 8, 8)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_tokenizer_presets_validate(path):
    assert load_config(path, schema=TokenizerConfig).tokenizer.kind in ("vq", "vae")


def test_unknown_tokenizer_key_is_named():
    with pytest.raises(ConfigError, match="unknown config key 'tokenizer.codebok_size'"):
        load_config(None, ["tokenizer.codebok_size=3"], schema=TokenizerConfig)


def test_cli_tokenizer_train(digits_dir, tmp_path):
    args = [
        "tokenizer",
        "train",
        str(CONFIGS / "vq.toml"),
        "--out",
        str(tmp_path / "t"),
        "--set",
        f'data.path="{digits_dir}"',
        "--set",
        "train.steps=5",
        "--set",
        "tokenizer.downsample=2",
        "--set",
        "tokenizer.hidden=8",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "val PSNR" in result.output and (tmp_path / "t" / "tokenizer.safetensors").exists()


def test_decoder_noise_feeds_the_decoder_noised_latents_in_training_only():
    """With ``decoder_noise`` the training loss decodes a noised latent (so it differs from the plain VAE's with the
    same weights and draws); the deterministic round trip does not change."""
    from unimm.models.vae import SmallVAE

    torch.manual_seed(0)
    plain = SmallVAE(1, 3, hidden=8, downsample=2).train()
    noisy = SmallVAE(1, 3, hidden=8, downsample=2, decoder_noise=1.0).train()
    noisy.load_state_dict(plain.state_dict())
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    a = plain.training_loss(x, torch.Generator().manual_seed(1), return_recon=True)[2]
    b = noisy.training_loss(x, torch.Generator().manual_seed(1), return_recon=True)[2]
    assert (a - b).abs().max() > 1e-4
    assert torch.equal(plain.eval().reconstruct(x)[0], noisy.eval().reconstruct(x)[0])
    assert torch.equal(noisy.eval().training_loss(x, torch.Generator().manual_seed(1), return_recon=True)[2], a)


def test_a_decoder_only_finetune_keeps_the_encoder_and_so_the_latent_space(digits_dir, tmp_path):
    """``tokenizer.init_from`` + ``train_decoder_only``: training starts from the given tokenizer (its validation
    error before training is the original's after), the encoder stays bit for bit, the decoder learns; mismatches
    are refused by name."""
    base = train_tokenizer(_tok_cfg(digits_dir, "vae", steps=30), tmp_path / "base", progress=False)
    cfg = _tok_cfg(digits_dir, "vae", steps=20)
    cfg.tokenizer.init_from, cfg.tokenizer.train_decoder_only = str(tmp_path / "base"), True
    cfg.tokenizer.decoder_noise = 0.5
    tuned = train_tokenizer(cfg, tmp_path / "tuned", progress=False)
    assert tuned["val_untrained"]["mse"] == pytest.approx(base["val"]["mse"], rel=1e-5)
    a, b = load_image_tokenizer(tmp_path / "base"), load_image_tokenizer(tmp_path / "tuned")
    assert all(torch.equal(v, b.encoder.state_dict()[k]) for k, v in a.encoder.state_dict().items())
    assert not all(torch.equal(v, b.decoder.state_dict()[k]) for k, v in a.decoder.state_dict().items())
    other = _tok_cfg(digits_dir, "vae", steps=2)
    other.tokenizer.init_from, other.tokenizer.hidden = str(tmp_path / "base"), 8
    with pytest.raises(ValueError, match="another shape"):
        train_tokenizer(other, tmp_path / "other", progress=False)
    alone = _tok_cfg(digits_dir, "vae", steps=2)
    alone.tokenizer.train_decoder_only = True
    with pytest.raises(ValueError, match="needs a KL-VAE"):
        train_tokenizer(alone, tmp_path / "alone", progress=False)
    vq = _tok_cfg(digits_dir, "vq", steps=2)
    vq.tokenizer.decoder_noise = 0.5
    with pytest.raises(ValueError, match="decoder_noise"):
        train_tokenizer(vq, tmp_path / "vq", progress=False)
