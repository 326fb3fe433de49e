"""Rotary position embeddings over N-D positions.

Every token carries ``A`` position coordinates (here ``A = 3``: time/sequence, row, column).
Frequency ``i`` of the head dimension rotates with the coordinate ``i % A`` (interleaved
multi-axis RoPE), so image patches get 2-D positions with both high and low frequencies
on each axis. When all coordinates of a token are equal (text), this is exactly the
1-D RoPE of Llama (``rotate_half`` convention), which lets Llama weights load unchanged.
"""

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float = 10000.0, num_axes: int = 3) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("axis", torch.arange(head_dim // 2) % num_axes, persistent=False)
        self.num_axes = num_axes

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions: [B, A, L] integer coordinates -> (cos, signed sin), each [B, 1, L, head_dim]; the signed
        sine is ``(-sin, sin)`` over the two halves (what :func:`apply_rope` multiplies the swapped halves by)."""
        b, _, length = positions.shape
        pos = positions.float().gather(1, self.axis.view(1, -1, 1).expand(b, -1, length))
        angles = pos.transpose(1, 2) * self.inv_freq  # [B, L, head_dim/2]
        emb = torch.cat((angles, angles), dim=-1).unsqueeze(1)
        sin = emb.sin()
        sin[..., : sin.shape[-1] // 2].neg_()
        return emb.cos(), sin


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Llama's ``(-x2, x1)``; :func:`apply_rope` gets it as ``roll(x) * signed sin`` with fewer ops."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, L, D]; cos / signed sin: [B, 1, L, D] -> ``x * cos + rotate_half(x) * sin``, the same numbers
    (``(-x2) * sin == x2 * (-sin)`` exactly) in four ops instead of six: at decoding sizes ops cost, not FLOPs."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin
