"""Next-token cross-entropy over text positions."""

import torch
import torch.nn.functional as F

from unimm.sequence import IGNORE


def text_ar_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits: [N, V] at positions that have a target; targets: [N] (IGNORE entries are skipped)."""
    if targets.numel() == 0 or bool((targets == IGNORE).all()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE)
