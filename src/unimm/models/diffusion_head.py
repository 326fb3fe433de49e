"""MAR's per-token diffusion head (Li et al. 2024, "Autoregressive Image Generation without Vector
Quantization"): a small MLP that models the distribution of one continuous patch given the
transformer's output ``z`` for its position. Residual blocks are AdaLN-modulated by the sum of the
noise-level embedding and a projection of ``z``; the gates and the output start at zero.
"""

import torch
import torch.nn.functional as F
from torch import nn

from unimm.models.image_io import timestep_embedding


class AdaLNResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Linear(width, 3 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(F.silu(c)).chunk(3, -1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    """x_t [M, P] + noise level [M] in [0, 1] + condition z [M, c] -> prediction [M, P]."""

    def __init__(self, patch_dim: int, cond_dim: int, width: int = 256, depth: int = 3, freq_dim: int = 128) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.x_in = nn.Linear(patch_dim, width)
        self.t_mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.z_in = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(AdaLNResBlock(width) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, patch_dim)
        for layer in (self.ada_out, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x_t: torch.Tensor, level: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        c = self.t_mlp(timestep_embedding(level, self.freq_dim).to(z.dtype)) + self.z_in(z)
        x = self.x_in(x_t)
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.ada_out(F.silu(c)).chunk(2, -1)
        return self.out(self.norm_out(x) * (1 + scale) + shift)
