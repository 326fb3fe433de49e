"""An untrained model built as ``unimm train`` builds it, and the seconds captioning takes: shared by the bench
scripts that time evaluation work (the cost does not depend on the weights)."""

import time
from pathlib import Path

import torch

from unimm.config import Config, load_config
from unimm.models import UnifiedModel
from unimm.train.loop import build_tokenizer, resolve_data, resolve_image_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def untrained_model(preset: str, data: Path, sets: list[str]) -> tuple[Config, UnifiedModel]:
    """``configs/<preset>.toml`` on ``data`` with ``sets``: its resolved config and the model (seed 0, eval mode)."""
    cfg = load_config(ROOT / "configs" / f"{preset}.toml", [f'data.path="{data}"', *sets])
    train, templates = resolve_data(cfg)
    resolve_image_tokenizer(cfg)
    torch.manual_seed(0)
    return cfg, UnifiedModel(cfg, build_tokenizer(cfg, train, templates)).eval()


def caption_seconds(model: UnifiedModel, images: torch.Tensor, batch_size: int) -> float:
    """Wall seconds to caption ``images`` in batches of ``batch_size``."""
    t0 = time.perf_counter()
    for i in range(0, len(images), batch_size):
        model.caption(images[i : i + batch_size])
    return time.perf_counter() - t0
