"""Incremental decoding through the backbone: a left-padded prompt, then one position per step.

With a KV cache each step feeds only the new position; without one (``use_cache=False``) every
step re-runs the whole sequence so far with the same inputs, positions and mask: the reference the
cached path is tested against. Both paths serve caption decoding and autoregressive image codes.
"""

import torch
import torch.nn.functional as F

from unimm.nn.backbone import Backbone


class IncrementalDecoder:
    def __init__(
        self,
        backbone: Backbone,
        x: torch.Tensor,
        positions: torch.Tensor,
        modality: torch.Tensor,
        attn_mask: torch.Tensor,
        valid: torch.Tensor,
        max_new: int,
        use_cache: bool = True,
    ) -> None:
        """x: [B, L, dim] prompt embeddings (left-padded); positions [B, 3, L]; modality (the ids blocks route
        by, ``ModelContext.branch_ids``), valid [B, L];
        attn_mask [B, L, L]. After construction ``last`` holds the hidden state of the last prompt position."""
        self.backbone = backbone
        self.cache = backbone.new_cache(x.shape[1] + max_new) if use_cache else None
        self.x, self.positions, self.modality, self.mask, self.valid = x, positions, modality, attn_mask, valid
        hidden, _ = backbone(x, positions, modality, attn_mask, self.cache)
        self.last = hidden[:, -1]

    def step(self, x_new: torch.Tensor, position: torch.Tensor, modality: int) -> torch.Tensor:
        """Append one position (x_new [B, dim], position [B, 3]) -> its hidden state [B, dim]."""
        b = x_new.shape[0]
        self.valid = torch.cat([self.valid, self.valid.new_ones(b, 1)], 1)
        mod = torch.full((b, 1), modality, dtype=torch.long, device=x_new.device)
        if self.cache is not None:
            hidden, _ = self.backbone(x_new[:, None], position[:, :, None], mod, self.valid[:, None, :], self.cache)
        else:
            self.x = torch.cat([self.x, x_new[:, None]], 1)
            self.positions = torch.cat([self.positions, position[:, :, None]], 2)
            self.modality = torch.cat([self.modality, mod], 1)
            self.mask = torch.cat([F.pad(self.mask, (0, 1)), self.valid[:, None, :]], 1)  # the new row sees all valid
            hidden, _ = self.backbone(self.x, self.positions, self.modality, self.mask)
        self.last = hidden[:, -1]
        return self.last
