"""A small Vision Transformer for the understanding path (trained in-project, no downloaded weights).

Patchify with a strided conv, 2-D RoPE positions, bidirectional pre-norm blocks from ``nn/``
(the same dense block as the language model), final RMSNorm. ``forward`` returns patch features
``[B, N, dim]``. The ``vit`` reader (``models/readers.py``) can pre-train it as a classifier with a
mean-pooled linear head of its own.
"""

import torch
from einops import rearrange
from torch import nn

from unimm.nn.block import DenseBlock
from unimm.nn.norms import RMSNorm
from unimm.nn.rope import RotaryEmbedding


class ViTEncoder(nn.Module):
    def __init__(
        self,
        channels: int,
        image_size: int,
        patch_size: int = 4,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not divisible by patch size {patch_size}")
        self.grid = image_size // patch_size
        self.patch = nn.Conv2d(channels, dim, patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(DenseBlock(dim, heads, heads, 4 * dim, i) for i in range(depth))
        self.norm = RMSNorm(dim)
        self.rotary = RotaryEmbedding(dim // heads)
        rows, cols = torch.meshgrid(torch.arange(self.grid), torch.arange(self.grid), indexing="ij")
        self.register_buffer(
            "positions", torch.stack([torch.zeros_like(rows), rows, cols]).flatten(1), persistent=False
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> patch features [B, (H/p)(W/p), dim]."""
        x = rearrange(self.patch(images), "b d h w -> b (h w) d")
        b, n, _ = x.shape
        rope = self.rotary(self.positions.expand(b, -1, -1))
        full = torch.ones(b, n, n, dtype=torch.bool, device=x.device)  # every patch sees every patch
        for block in self.blocks:
            x, _ = block(x, None, full, rope)
        return self.norm(x)
