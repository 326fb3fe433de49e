"""The dense pre-norm transformer block (Llama layout).

Block contract shared by every layer kind (dense, MoE, modality-MoE, MoT):
``block(x, modality, attn_mask, rope, cache) -> (x, aux_losses)`` where ``modality`` is
``[B, L]`` (0 = text, 1 = image) and ``aux_losses`` a dict of scalars added to the loss.
"""

import torch
from torch import nn

from unimm.nn.attention import Attention
from unimm.nn.kv_cache import KVCache
from unimm.nn.mlp import SwiGLU
from unimm.nn.norms import RMSNorm


class DenseBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        kv_heads: int,
        hidden_dim: int,
        layer_idx: int,
        norm_eps: float = 1e-6,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(dim, norm_eps)
        self.self_attn = Attention(dim, heads, kv_heads, layer_idx, qkv_bias)
        self.post_attention_layernorm = RMSNorm(dim, norm_eps)
        self.mlp = SwiGLU(dim, hidden_dim)

    def forward(
        self,
        x: torch.Tensor,
        modality: torch.Tensor | None,
        attn_mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = x + self.self_attn(self.input_layernorm(x), attn_mask, rope, cache)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, {}
