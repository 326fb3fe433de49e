"""Grouped-query self-attention with RoPE, SDPA and an optional KV cache."""

import torch
import torch.nn.functional as F
from torch import nn

from unimm.nn.kv_cache import KVCache, StaticKVCache
from unimm.nn.rope import apply_rope


def one_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One new query per row over a static cache's slots: q [B, H, 1, D], k / v [B, Hkv, S, D], mask bool [B, 1, S]
    (True = may attend) -> [B, H, 1, D]. SDPA's arithmetic (scaled scores, masked softmax, weighted values)
    written out, so that a compiled decoding step fuses it with the ops around it instead of calling one opaque
    kernel per layer (``bench/decode.py``)."""
    b, heads, _, d = q.shape
    kv_heads = k.shape[1]
    q = q.reshape(b, kv_heads, heads // kv_heads, d)  # the query heads that share a key / value head, side by side
    scores = torch.matmul(q, k.transpose(-1, -2)) * d**-0.5  # [B, Hkv, G, S]
    scores = scores.masked_fill(~mask[:, :, None, :], float("-inf"))
    return torch.matmul(scores.softmax(-1), v).reshape(b, heads, 1, d)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    kv_heads: int,
    layer_idx: int,
    attn_mask: torch.Tensor | None,
    rope: tuple[torch.Tensor, torch.Tensor],
    cache: KVCache | None = None,
) -> torch.Tensor:
    """Multi-head attention core shared by every block kind: q [B, L, H*D], k/v [B, L, Hkv*D] -> [B, L, H*D].

    RoPE on q and k, new keys/values appended to ``cache``; ``attn_mask`` bool [B, L, L_total] (True = may
    attend) or None for causal (with an offset after a cached prefix).
    """
    b, length, _ = q.shape
    # b l (h d) -> b h l d as views (an einops call costs microseconds a layer, which decoding feels)
    q = q.view(b, length, heads, -1).transpose(1, 2)
    k = k.view(b, length, kv_heads, -1).transpose(1, 2)
    v = v.view(b, length, kv_heads, -1).transpose(1, 2)
    q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    if cache is not None:
        k, v = cache.update(layer_idx, k, v)
    past = cache.length if cache is not None and attn_mask is None else 0  # (a static cache needs the mask)
    if attn_mask is not None:
        mask, causal = attn_mask.unsqueeze(1), False
    elif past == 0 or length == 1:
        mask, causal = None, past == 0 and length > 1
    else:  # several new tokens after a cached prefix: causal with an offset
        mask = torch.ones(length, past + length, dtype=torch.bool, device=q.device).tril(past)
        causal = False
    if isinstance(cache, StaticKVCache) and length == 1:  # a decoding step of StaticDecoder
        out = one_query_attention(q, k, v, attn_mask)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=kv_heads != heads)
    return out.transpose(1, 2).reshape(b, length, -1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, layer_idx: int, qkv_bias: bool = False) -> None:
        super().__init__()
        assert dim % heads == 0 and heads % kv_heads == 0
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.layer_idx = layer_idx
        # q, k and v in one matmul: at decoding sizes the per-call overhead outweighs the arithmetic
        self.split = (heads * self.head_dim, kv_heads * self.head_dim, kv_heads * self.head_dim)
        self.qkv_proj = nn.Linear(dim, sum(self.split), bias=qkv_bias)
        self.o_proj = nn.Linear(heads * self.head_dim, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x: [B, L, dim]; attn_mask: bool [B, L, L_total] (True = may attend) or None for causal."""
        q, k, v = self.qkv_proj(x).split(self.split, dim=-1)
        return self.o_proj(attend(q, k, v, self.heads, self.kv_heads, self.layer_idx, attn_mask, rope, cache))
