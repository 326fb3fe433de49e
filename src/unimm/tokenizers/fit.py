"""The one loop that fits an image tokenizer (VQ-VAE or KL-VAE) on a tensor of images.

Used by ``unimm tokenizer train`` and by the codecs a training run fits before its transformer.
A tokenizer exposes ``training_loss(images, generator) -> (loss, metrics)``; with
``return_recon=True`` it also returns the reconstruction, which the optional perceptual and
adversarial terms (``unimm.tokenizers.losses``, both off by default) are computed on. A ``FitFlops`` passed
as ``flops`` counts the loop's FLOPs (forward, backward and the discriminator's step; a step's key is its phase).
"""

import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from unimm.checkpoint import load_weights
from unimm.flops import FitFlops
from unimm.optim import warmup_cosine
from unimm.tokenizers.losses import PerceptualLoss, d_hinge_loss, g_hinge_loss


def fit_image_tokenizer(
    model: nn.Module,
    images: torch.Tensor,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
    desc: str = "fit tokenizer",
    on_step: Callable[[int, torch.Tensor, dict], None] | None = None,
    *,
    discriminator: nn.Module | None = None,
    adversarial_weight: float = 0.0,
    adversarial_start: int = 0,
    perceptual: PerceptualLoss | None = None,
    perceptual_weight: float = 0.0,
    flops: FitFlops | None = None,
) -> dict[str, float]:
    """AdamW with warmup + cosine on random batches of ``images`` [N, C, H, W]; returns the last metrics.

    Optional terms: ``perceptual_weight * perceptual(recon, x)`` every step; from step ``adversarial_start``
    on, ``adversarial_weight * g_hinge(D(recon))`` followed by a hinge step of ``discriminator`` (its own
    AdamW) on (x, recon.detach()).
    """
    use_perc = perceptual is not None and perceptual_weight > 0
    use_adv = discriminator is not None and adversarial_weight > 0
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(max(1, steps // 20), steps, 0.05))
    if use_perc:
        perceptual.to(images.device)
    if use_adv:
        discriminator.to(images.device).train()
        d_opt = torch.optim.AdamW(discriminator.parameters(), lr=lr, betas=(0.5, 0.9), weight_decay=0.0)
    model.train()
    bar = tqdm(range(steps), disable=not progress, desc=desc, unit="step")
    metrics: dict = {}
    for step in bar:
        adv_now = use_adv and step >= adversarial_start
        with flops.step(adv_now) if flops is not None else nullcontext():
            x = images[torch.randint(0, len(images), (batch_size,), generator=gen)]
            if not (use_perc or adv_now):
                loss, metrics = model.training_loss(x, gen)
            else:
                loss, metrics, recon = model.training_loss(x, gen, return_recon=True)
                if use_perc:
                    p = perceptual(recon, x)
                    loss = loss + perceptual_weight * p
                    metrics["perceptual"] = p.detach()
                if adv_now:
                    discriminator.requires_grad_(False)  # the generator term must not touch D's grads
                    g = g_hinge_loss(discriminator(recon))
                    discriminator.requires_grad_(True)
                    loss = loss + adversarial_weight * g
                    metrics["g_loss"] = g.detach()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if adv_now:
                d = d_hinge_loss(discriminator(x), discriminator(recon.detach()))
                d_opt.zero_grad(set_to_none=True)
                d.backward()
                d_opt.step()
                metrics["d_loss"] = d.detach()
        if on_step is not None:
            on_step(step, loss.detach(), metrics)
        bar.set_postfix(mse=f"{float(metrics['mse']):.4f}")
    opt.zero_grad(set_to_none=True)
    model.eval()
    if use_adv:
        discriminator.eval()
    return {k: float(v) for k, v in metrics.items()}


def load_tokenizer_into(model: nn.Module, directory: str | Path) -> int | None:
    """Load a ``unimm tokenizer train`` output's weights into ``model`` (a run's codec, built from ``codec.*``),
    failing with one line when they do not match; returns the FLOPs its training spent (its ``ledger.json``'s
    total; None without one), which a run counts as shared, not its own."""
    directory = Path(directory)
    state = load_weights(directory / "tokenizer.safetensors")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of another shape
        first = str(err).strip().splitlines()[-1].strip()
        raise ValueError(f"{directory}: tokenizer weights do not match codec.* ({first})") from None
    if missing or unexpected:
        raise ValueError(f"{directory}: tokenizer weights do not match codec.* ({(missing or unexpected)[:3]})")
    ledger = directory / "ledger.json"
    return json.loads(ledger.read_text())["total"] if ledger.is_file() else None
