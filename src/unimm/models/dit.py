"""A small Diffusion Transformer (DiT, Peebles & Xie 2023): the separate image decoder of ``connector``.

The decoder denoises latent patches ``[B, n, P]`` given a noise level and a sequence of
conditioning tokens ``[B, M, c]`` (from a language model's query tokens, or from its own caption
embedding when it is pre-trained alone). Every block is AdaLN-Zero: the timestep embedding plus
the pooled conditioning give each block a shift, scale and gate per sub-layer, the gates starting
at zero so that a fresh block is the identity. The conditioning tokens enter either by
cross-attention after each self-attention (PixArt-alpha) or in context: prepended to the patch
tokens and attended jointly (the original DiT / SD3 style), then dropped at the output.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from unimm.models.image_io import timestep_embedding

Conditioning = Literal["cross", "in-context"]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [B, L, d] with per-sample shift/scale [B, d]."""
    return x * (1 + scale[:, None]) + shift[:, None]


class MultiHeadAttention(nn.Module):
    """Plain multi-head attention (no RoPE: the decoder has learned absolute positions)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, d] attends to ctx [B, M, d]; ``ctx_mask`` [B, M] bool, True = may attend."""
        q = rearrange(self.q(x), "b l (h d) -> b h l d", h=self.heads)
        k, v = (rearrange(t, "b m (h d) -> b h m d", h=self.heads) for t in self.kv(ctx).chunk(2, -1))
        mask = ctx_mask[:, None, None, :] if ctx_mask is not None else None
        return self.out(rearrange(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), "b h l d -> b l (h d)"))


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, cross: bool, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = MultiHeadAttention(dim, heads)
        self.cross = MultiHeadAttention(dim, heads) if cross else None
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6) if cross else None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = mlp_ratio * dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)  # AdaLN-Zero: gates start at 0, the block starts as the identity
        nn.init.zeros_(self.ada.bias)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, ctx: torch.Tensor | None, ctx_mask: torch.Tensor | None,
        self_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """x [B, L, d]; c [B, d] the AdaLN signal; ctx [B, M, d] for cross-attention (None in context);
        masks [B, M] / [B, L] bool, True = may attend (every row needs one True)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(c)).chunk(6, -1)
        h = modulate(self.norm1(x), shift1, scale1)
        x = x + gate1[:, None] * self.attn(h, h, self_mask)
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x), ctx, ctx_mask)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiT(nn.Module):
    """Latent patches [B, n, P] + noise level [B] in [0, 1] + conditioning [B, M, c] -> prediction [B, n, P]."""

    def __init__(
        self, patch_dim: int, num_patches: int, cond_dim: int, dim: int = 128, depth: int = 4, heads: int = 4,
        conditioning: Conditioning = "cross", freq_dim: int = 128,
    ) -> None:  # fmt: skip
        super().__init__()
        if conditioning not in ("cross", "in-context"):
            raise ValueError(f"conditioning must be 'cross' or 'in-context', got {conditioning!r}")
        self.conditioning, self.freq_dim = conditioning, freq_dim
        self.x_in = nn.Linear(patch_dim, dim)
        self.pos = nn.Parameter(torch.randn(1, num_patches, dim) * 0.02)
        self.t_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.ctx_in = nn.Linear(cond_dim, dim)
        self.pool_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(DiTBlock(dim, heads, cross=conditioning == "cross") for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, patch_dim)
        for layer in (self.ada_out, self.out):  # the decoder starts by predicting zeros
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self, x_t: torch.Tensor, level: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x_t [B, n, P]; level [B]; cond [B, M, c]; cond_mask [B, M] bool (True = a real token) or None."""
        ctx = self.ctx_in(cond)
        keep = cond_mask[..., None].to(ctx.dtype) if cond_mask is not None else torch.ones_like(ctx[..., :1])
        pooled = (ctx * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        c = self.t_mlp(timestep_embedding(level, self.freq_dim).to(ctx.dtype)) + self.pool_mlp(pooled)
        x = self.x_in(x_t) + self.pos
        n = x.shape[1]
        self_mask = None
        if self.conditioning == "in-context":
            x = torch.cat([ctx, x], 1)
            if cond_mask is not None:
                self_mask = F.pad(cond_mask, (0, n), value=True)
        for block in self.blocks:
            x = block(x, c, ctx if self.cross_attends else None, cond_mask, self_mask)
        shift, scale = self.ada_out(F.silu(c)).chunk(2, -1)
        return self.out(modulate(self.norm_out(x[:, -n:]), shift, scale))

    @property
    def cross_attends(self) -> bool:
        return self.conditioning == "cross"
