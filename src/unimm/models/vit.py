"""A small Vision Transformer for the understanding path (trained in-project, no downloaded weights).

Patchify with a strided conv, RoPE positions (t, row, col), bidirectional pre-norm blocks from ``nn/``
(the same dense block as the language model), final RMSNorm. ``forward`` returns patch features
``[B, N, dim]``. A clip ``[B, T, C, H, W]`` is read whole: its frames' patches attend to each other
with the frame index on RoPE's time axis, so the features of a frame know the frames around it (what a
pooling connector needs to keep the motion); an image is the one-frame clip at time 0. The ``vit`` reader
(``models/readers.py``) can pre-train it as a classifier with a mean-pooled linear head of its own.
"""

import torch
from einops import rearrange
from torch import nn

from unimm.data.clips import frame_count, frames_of
from unimm.nn.block import DenseBlock
from unimm.nn.norms import RMSNorm
from unimm.nn.rope import RotaryEmbedding
from unimm.sequence import span_cells


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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] or clips [B, T, C, H, W] -> patch features [B, T (H/p)(W/p), dim] (T = 1 for images),
        frame by frame in raster order."""
        frames = frame_count(images)
        x = rearrange(self.patch(frames_of(images)), "(b t) d h w -> b (t h w) d", t=frames)
        b, n, _ = x.shape
        positions = span_cells((frames, self.grid, self.grid)).T.to(x.device)
        rope = self.rotary(positions.expand(b, -1, -1))
        full = torch.ones(b, n, n, dtype=torch.bool, device=x.device)  # every patch sees every patch
        for block in self.blocks:
            x, _ = block(x, None, full, rope)
        return self.norm(x)
