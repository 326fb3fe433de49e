"""The ``pretrained`` regime's side budget: every part a run prepares (its VAE or VQ fit, ViT pre-training, the
connector decoder's pre-training) and the shared VQ tokenizer get the same ``side_flops`` of their own, before the
run's training steps spend the main budget.

A part's steps are ``ceil(side_flops / price)``, the price being the counted FLOPs of one of its steps: its
loop is run for one step on a copy of the run's model (the first 256 training images; a step's cost does not
depend on how many images there are to draw from). What a part then really spends is counted as it runs and
reported (``RUN/ledger.json``); passes outside the loops (the VAE's latent scale, the decoder's latents) are
counted and reported with it, not priced into its steps.
"""

from __future__ import annotations

import math
from functools import reduce

import torch

from unimm.config import Config, TokenizerConfig
from unimm.data import load_split
from unimm.data.clips import frames_of
from unimm.flops import FitFlops
from unimm.models import UnifiedModel
from unimm.tokenizers.fit import fit_image_tokenizer
from unimm.tokenizers.train import build_image_tokenizer, build_tokenizer_losses
from unimm.train.loop import build_tokenizer, resolve_data, resolve_image_tokenizer
from unimm.train.stream import one_caption_each

PROBE_IMAGES = 256


def _set(cfg: Config, key: str, value: int) -> None:
    *path, name = key.split(".")
    setattr(reduce(getattr, path, cfg), name, value)


def preparation_prices(cfg: Config) -> dict[str, float]:
    """FLOPs of one step of each preparation loop of the run, by the config key of its steps."""
    cfg = cfg.model_copy(deep=True)
    data, templates = resolve_data(cfg)
    resolve_image_tokenizer(cfg)
    tokenizer = build_tokenizer(cfg, data, templates)
    keys = [key for _, _, key in UnifiedModel(cfg, tokenizer).preparation(data.labels)]
    for key in keys:
        _set(cfg, key, 1)
    torch.manual_seed(cfg.train.seed)
    model = UnifiedModel(cfg, tokenizer)
    n = PROBE_IMAGES
    captions = one_caption_each(data, templates, cfg.train.seed)
    stats = model.prepare(data.images[:n], data.labels[:n], cfg.train.seed, False, captions[:n] if captions else None)
    return {key: float(stats[f"flops.{key}"]) for key in keys}


def side_steps(prices: dict[str, float], side_flops: float) -> dict[str, int]:
    """Steps of each priced part for ``side_flops``: at least one, the last one may overshoot."""
    bad = [k for k, v in prices.items() if v <= 0]
    if bad:
        raise ValueError(f"cannot price a step of {bad} (counted {[prices[k] for k in bad]} FLOPs)")
    return {key: max(1, math.ceil(side_flops / price - 1e-9)) for key, price in prices.items()}


def tokenizer_step_price(cfg: TokenizerConfig) -> float:
    """FLOPs of the first step of ``unimm tokenizer train`` with ``cfg``."""
    cfg = cfg.model_copy(deep=True)
    data = load_split(cfg.data.path, "train", cfg.data.image_size, cfg.data.channels)
    images = frames_of(data.images[:PROBE_IMAGES])  # a video dataset's tokenizer fits on its frames, as it trains
    cfg.data.channels, cfg.data.image_size = int(images.shape[1]), int(images.shape[-1])
    torch.manual_seed(cfg.train.seed)
    t, fit = cfg.train, FitFlops()
    images = images[:PROBE_IMAGES]
    extra = build_tokenizer_losses(cfg)
    fit_image_tokenizer(build_image_tokenizer(cfg), images, 1, t.batch_size, t.lr, t.seed, False, **extra, flops=fit)
    return float(fit.flops)
