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
