"""SwiGLU feed-forward as in Llama: down(silu(gate(x)) * up(x))."""

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    """The gate and up projections are one matmul (rows ``[gate; up]``), as Llama's are two.

    Follows the feed-forward contract of ``nn/block.py``, ``ff(x, modality) -> (y, aux_losses)``: the
    modality is ignored and there are no auxiliary losses."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(dim, 2 * hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=False)

    def forward(
        self, x: torch.Tensor, modality: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x [..., dim] -> (y [..., dim], {})."""
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up), {}
