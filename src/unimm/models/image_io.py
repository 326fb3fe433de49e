"""How images enter and leave the transformer as continuous patches.

``PixelPatches`` cuts an image into ``p × p`` patches (the latent is the image itself);
``PatchEmbed`` projects a patch and adds its noise-level embedding; ``PatchHead`` maps a
hidden state back to a patch-sized prediction.
"""

import math
from typing import Literal

import torch
from einops import rearrange
from pydantic import Field
from torch import nn

from unimm.models.frames import FramewiseCodec
from unimm.settings import CODECS, Settings


class PixelSettings(Settings):
    """``codec.kind = "pixels"``: the image itself, cut into patches."""

    kind: Literal["pixels"] = "pixels"
    patch_size: int = Field(4, gt=0, description="patch side in pixels")


@CODECS.register(PixelSettings)
class PixelPatches(FramewiseCodec, nn.Module):
    """Images [B, C, H, W] in [-1, 1] <-> patch vectors [B, (H/p)(W/p), C p p]; clips frame by frame."""

    @classmethod
    def from_settings(cls, s: PixelSettings, channels: int, image_size: int) -> "PixelPatches":
        return cls(channels, image_size, s.patch_size)

    def __init__(self, channels: int, image_size: int, patch_size: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not divisible by codec.patch_size {patch_size}")
        self.channels, self.image_size, self.patch_size = channels, image_size, patch_size
        self.frame_grid = (image_size // patch_size, image_size // patch_size)
        self.patch_dim = channels * patch_size * patch_size

    def encode_frame(self, images: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        return rearrange(images, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=p, p2=p)

    def decode_frame(self, patches: torch.Tensor) -> torch.Tensor:
        p, (h, w) = self.patch_size, self.frame_grid
        return rearrange(patches, "b (h w) (c p1 p2) -> b c (h p1) (w p2)", h=h, w=w, p1=p, p2=p)

    def preparation(self) -> list[tuple[str, int, str]]:
        return []

    def prepare(self, images: torch.Tensor, seed: int = 0, progress: bool = True) -> dict:
        """Pixels need no fitting (a learned codec such as ``VAEPatches`` trains here)."""
        return {}


def timestep_embedding(level: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of noise levels ``level`` in [0, 1] (scaled by 1000) -> [N, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=level.device) / half)
    args = level.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class PatchEmbed(nn.Module):
    def __init__(self, patch_dim: int, dim: int, freq_dim: int = 128) -> None:
        super().__init__()
        self.proj = nn.Linear(patch_dim, dim)
        self.freq_dim = freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, patches: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """patches: [M, P], level: [M] -> [M, dim]."""
        return self.proj(patches) + self.time_mlp(timestep_embedding(level, self.freq_dim))


class PatchHead(nn.Module):
    def __init__(self, dim: int, patch_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, patch_dim)
        nn.init.zeros_(self.proj.weight)  # start by predicting zeros, as DiT's final layer
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden)
