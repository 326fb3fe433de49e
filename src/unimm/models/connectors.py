"""Connectors from an understanding encoder's features to the language model's width.

All map features ``[B, N, d_in]`` to tokens ``[B, M, d_out]``:
- ``LinearConnector``: one projection per feature (M = N).
- ``MLPConnector``: two layers with GELU (LLaVA-1.5), M = N.
- ``ResamplerConnector``: M learned queries cross-attend to the features (Perceiver Resampler,
  Flamingo), so any number of features becomes a fixed number of tokens.
- ``QFormerConnector``: M learned queries alternate self-attention among themselves and
  cross-attention to the features (BLIP-2's Q-Former, without its text branch).
"""

import torch
from torch import nn


class LinearConnector(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.proj(feats)


class MLPConnector(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats)


class _CrossAttentionLayer(nn.Module):
    """Pre-norm queries attend to (optionally themselves and) the features, then an MLP."""

    def __init__(self, dim: int, heads: int, self_attention: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True) if self_attention else None
        self.norm_self = nn.LayerNorm(dim) if self_attention else None
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, q: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        if self.self_attn is not None:
            h = self.norm_self(q)
            q = q + self.self_attn(h, h, h, need_weights=False)[0]
        kv = self.norm_kv(feats)
        q = q + self.cross_attn(self.norm_q(q), kv, kv, need_weights=False)[0]
        return q + self.mlp(self.norm_mlp(q))


class _QueryConnector(nn.Module):
    def __init__(self, d_in: int, d_out: int, num_queries: int, depth: int, heads: int, self_attention: bool):
        super().__init__()
        self.inp = nn.Linear(d_in, d_out)
        self.queries = nn.Parameter(torch.randn(num_queries, d_out) * d_out**-0.5)
        self.layers = nn.ModuleList(_CrossAttentionLayer(d_out, heads, self_attention) for _ in range(depth))
        self.norm = nn.LayerNorm(d_out)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        feats = self.inp(feats)
        q = self.queries.expand(feats.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, feats)
        return self.norm(q)


class ResamplerConnector(_QueryConnector):
    def __init__(self, d_in: int, d_out: int, num_queries: int = 16, depth: int = 2, heads: int = 4) -> None:
        super().__init__(d_in, d_out, num_queries, depth, heads, self_attention=False)


class QFormerConnector(_QueryConnector):
    def __init__(self, d_in: int, d_out: int, num_queries: int = 16, depth: int = 2, heads: int = 4) -> None:
        super().__init__(d_in, d_out, num_queries, depth, heads, self_attention=True)


CONNECTORS = {
    "linear": LinearConnector,
    "mlp": MLPConnector,
    "resampler": ResamplerConnector,
    "qformer": QFormerConnector,
}


def build_connector(kind: str, d_in: int, d_out: int, **kw) -> nn.Module:
    if kind not in CONNECTORS:
        raise ValueError(f"unknown connector {kind!r}; allowed: {sorted(CONNECTORS)}")
    return CONNECTORS[kind](d_in, d_out, **kw)
