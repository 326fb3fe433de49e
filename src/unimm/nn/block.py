"""The dense pre-norm transformer block (Llama layout), with a pluggable feed-forward.

Block contract shared by every layer kind (dense, MoE, modality-MoE, MoT):
``block(x, modality, attn_mask, rope, cache) -> (x, aux_losses)`` where ``modality`` is
``[B, L]``, the ids the block routes by (0 = text, 1 = image, or by role under ``layers.route = "role"``,
see ``nn/layers.py``) and ``aux_losses`` a dict of scalars added to the loss.

Feed-forward contract: ``ff(x, modality) -> (y, aux_losses)`` with x, y ``[B, L, dim]``; the dense
SwiGLU returns ``(y, {})``, a routed MoE feed-forward its balancing and z-losses.
"""

from collections.abc import Callable

import torch
from torch import nn

from unimm.nn.attention import Attention
from unimm.nn.kv_cache import KVCache
from unimm.nn.mlp import SwiGLU
from unimm.nn.norms import RMSNorm


class DenseBlock(nn.Module):
    """``x + attn(norm(x))``, then ``h + mlp(norm(h))``. ``make_mlp`` builds the feed-forward (default: a SwiGLU
    of width ``hidden_dim``, which is then unused); one that builds a :class:`~unimm.nn.moe.MoEFeedForward` makes
    it the MoE block, with the same attention and norm parameter names, so dense attention weights load as is.
    It is a builder, called after the attention exists, so parameters are initialised in the same order for
    every feed-forward (a seeded model is the same model whichever way it is assembled)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        kv_heads: int,
        hidden_dim: int,
        layer_idx: int,
        norm_eps: float = 1e-6,
        qkv_bias: bool = False,
        make_mlp: Callable[[], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(dim, norm_eps)
        self.self_attn = Attention(dim, heads, kv_heads, layer_idx, qkv_bias)
        self.post_attention_layernorm = RMSNorm(dim, norm_eps)
        self.mlp = make_mlp() if make_mlp is not None else SwiGLU(dim, hidden_dim)

    def forward(
        self,
        x: torch.Tensor,
        modality: torch.Tensor | None,
        attn_mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = x + self.self_attn(self.input_layernorm(x), attn_mask, rope, cache)
        y, aux = self.mlp(self.post_attention_layernorm(x), modality)
        return x + y, aux
