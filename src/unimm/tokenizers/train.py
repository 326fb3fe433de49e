"""``unimm tokenizer train``: train an image tokenizer (VQ-VAE or KL-VAE) on a dataset's images.

Writes ``config.toml`` (resolved), ``tokenizer.safetensors`` and ``metrics.json`` (reconstruction
MSE / PSNR on the validation split; for VQ also codebook usage and perplexity) into ``out``,
a ``metrics.jsonl`` training log, and ``ledger.json``: the FLOPs of the fit (counted as training counts them,
``unimm.flops.FitFlops``) and its wall seconds, so that every run that uses the tokenizer can be charged for it.
The validation passes measure the tokenizer and are not counted.
"""

import json
import time
from pathlib import Path

import torch
from torch import nn

from unimm.checkpoint import atomic_write_text, load_weights, save_weights
from unimm.config import TokenizerConfig, dump_toml, load_config
from unimm.data import load_split
from unimm.data.clips import frames_of
from unimm.data.edit_store import is_edit_dataset
from unimm.flops import FitFlops
from unimm.models.vae import SmallVAE
from unimm.tokenizers.fit import fit_image_tokenizer
from unimm.tokenizers.losses import PatchDiscriminator, PerceptualLoss, random_conv_features
from unimm.tokenizers.vqvae import VQVAE, psnr


def build_image_tokenizer(cfg: TokenizerConfig) -> nn.Module:
    t, channels = cfg.tokenizer, cfg.data.channels
    if t.decoder_noise > 0 and t.kind != "vae":
        raise ValueError("tokenizer.decoder_noise applies to a KL-VAE (tokenizer.kind = 'vae') only")
    if channels is None:
        raise ValueError("data.channels must be resolved from the dataset first")
    if t.kind == "vq":
        ema = t.ema_decay if t.ema_decay > 0 else None
        return VQVAE(channels, t.codebook_size, t.code_dim, t.hidden, t.downsample, t.beta, t.l2_normalize, ema)
    return SmallVAE(channels, t.code_dim, t.hidden, t.downsample, t.kl_weight, t.decoder_noise)


def start_from(model: nn.Module, cfg: TokenizerConfig) -> None:
    """``tokenizer.init_from``: load a trained tokenizer of the same shape; with ``train_decoder_only`` freeze the
    encoder, so the latents (and every model trained on them) stay as they were."""
    t = cfg.tokenizer
    if t.train_decoder_only and (t.kind != "vae" or t.init_from is None):
        raise ValueError("tokenizer.train_decoder_only needs a KL-VAE (kind = 'vae') and tokenizer.init_from")
    if t.init_from is None:
        return
    source = load_config(Path(t.init_from) / "config.toml", schema=TokenizerConfig).tokenizer
    shape = ("kind", "code_dim", "hidden", "downsample", "codebook_size")
    if any(getattr(source, k) != getattr(t, k) for k in shape):
        theirs = {k: getattr(source, k) for k in shape}
        raise ValueError(f"tokenizer.init_from {t.init_from} has another shape ({theirs}) than this config")
    model.load_state_dict(load_weights(Path(t.init_from) / "tokenizer.safetensors"))
    if t.train_decoder_only:
        model.encoder.requires_grad_(False)


def build_tokenizer_losses(cfg: TokenizerConfig) -> dict:
    """Keyword arguments of ``fit_image_tokenizer`` for the optional adversarial / perceptual terms.

    Their modules are created only when their weight is > 0 and live outside the tokenizer, so they
    are never saved with it (a default config yields ``{}``).
    """
    t, kw = cfg.tokenizer, {}
    if t.adversarial_weight > 0:
        kw.update(
            discriminator=PatchDiscriminator(cfg.data.channels),
            adversarial_weight=t.adversarial_weight,
            adversarial_start=t.adversarial_start,
        )
    if t.perceptual_weight > 0:
        perceptual = PerceptualLoss(random_conv_features(cfg.data.channels, seed=cfg.train.seed))
        kw.update(perceptual=perceptual, perceptual_weight=t.perceptual_weight)
    return kw


@torch.no_grad()
def evaluate_tokenizer(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Reconstruction error over ``images``; with discrete codes also their usage and perplexity."""
    model.eval()
    sq, counts = 0.0, None
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        recon, idx = model.reconstruct(x)
        if idx is not None:
            c = torch.bincount(idx.flatten(), minlength=model.quantizer.num_codes).float()
            counts = c if counts is None else counts + c
        sq += float((recon - x).pow(2).sum())
    mse = sq / images.numel()
    out = {"mse": mse, "psnr": float(psnr(torch.tensor(mse))), "n": len(images)}
    if counts is not None:
        p = counts / counts.sum()
        out["usage"] = float((counts > 0).float().mean())
        out["perplexity"] = float(torch.exp(-(p * (p + 1e-10).log()).sum()))
    return out


def train_tokenizer(cfg: TokenizerConfig, out: str | Path, progress: bool = True) -> dict:
    """Train, evaluate on the validation split, save; returns the metrics. A video dataset's clips train it on
    their frames (the per-frame codecs of video runs, ``models/frames.py``)."""
    out = Path(out)
    data = load_split(cfg.data.path, "train", cfg.data.image_size, cfg.data.channels)
    data.images = frames_of(data.images)
    cfg.data.channels, cfg.data.image_size = int(data.images.shape[1]), int(data.images.shape[-1])
    val = load_split(cfg.data.path, "val", cfg.data.image_size, cfg.data.channels)
    val.images = frames_of(val.images)
    torch.manual_seed(cfg.train.seed)
    model = build_image_tokenizer(cfg)
    start_from(model, cfg)
    before = evaluate_tokenizer(model, val.images)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.toml", dump_toml(cfg))
    with open(out / "metrics.jsonl", "w") as log:

        def on_step(step: int, loss: torch.Tensor, metrics: dict) -> None:
            if (step + 1) % cfg.train.log_every == 0 or step + 1 == cfg.train.steps:
                row = {"step": step + 1, "loss": float(loss)}
                row.update({k: round(float(v), 5) for k, v in metrics.items()})
                row["psnr"] = round(float(psnr(metrics["mse"])), 3)
                log.write(json.dumps(row) + "\n")

        t = cfg.train
        desc = f"train {cfg.tokenizer.kind} tokenizer"
        extra, fit, t0 = build_tokenizer_losses(cfg), FitFlops(), time.perf_counter()
        fit_image_tokenizer(
            model, data.images, t.steps, t.batch_size, t.lr, t.seed, progress, desc, on_step, **extra, flops=fit
        )
        seconds = time.perf_counter() - t0
    result = {"val": evaluate_tokenizer(model, val.images), "val_untrained": before, "steps": cfg.train.steps}
    if is_edit_dataset(cfg.data.path):  # the most an editing model writing through this tokenizer can score
        from unimm.eval.editing import tokenizer_ceiling

        model.eval()
        result["edit_ceiling"] = tokenizer_ceiling(model, cfg.data.path)
    save_weights(model.state_dict(), out / "tokenizer.safetensors")
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
    rec = fit.record()
    ledger = {"preparation": {"tokenizer.steps": rec["flops"]}, "total": rec["flops"], "steps": rec["steps"],
              "flops_per_step": rec["per_step"], "wall_s": round(seconds, 2)}  # fmt: skip
    atomic_write_text(out / "ledger.json", json.dumps(ledger, indent=2))
    return result


def load_image_tokenizer(directory: str | Path) -> nn.Module:
    """A tokenizer saved by ``train_tokenizer``, in eval mode."""
    directory = Path(directory)
    cfg = load_config(directory / "config.toml", schema=TokenizerConfig)
    model = build_image_tokenizer(cfg)
    model.load_state_dict(load_weights(directory / "tokenizer.safetensors"))
    return model.eval()
