"""Connectors from an understanding encoder's features to the language model's width.

All map features ``[B, N, d_in]`` to tokens ``[B, M, d_out]``:
- ``LinearConnector``: one projection per feature (M = N).
- ``MLPConnector``: two layers with GELU (LLaVA-1.5), M = N.
- ``ResamplerConnector``: M learned queries cross-attend to the features (Perceiver Resampler,
  Flamingo), so any number of features becomes a fixed number of tokens.
- ``QFormerConnector``: M learned queries alternate self-attention among themselves and
  cross-attention to the features (BLIP-2's Q-Former, without its text branch).
"""

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from unimm.settings import CONNECTORS, Settings


class LinearSettings(Settings):
    """``reader.connector.kind = "linear"``: one projection per feature."""

    kind: Literal["linear"] = "linear"


class MLPSettings(Settings):
    """``reader.connector.kind = "mlp"``: two layers with GELU (LLaVA-1.5)."""

    kind: Literal["mlp"] = "mlp"


class QuerySettings(Settings):
    queries: int = Field(16, gt=0, description="image tokens the LLM reads")
    depth: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)


class ResamplerSettings(QuerySettings):
    """``reader.connector.kind = "resampler"``: learned queries cross-attend to the features (Flamingo)."""

    kind: Literal["resampler"] = "resampler"


class QFormerSettings(QuerySettings):
    """``reader.connector.kind = "qformer"``: queries alternate self- and cross-attention (BLIP-2)."""

    kind: Literal["qformer"] = "qformer"


@CONNECTORS.register(LinearSettings)
class LinearConnector(nn.Module):
    @classmethod
    def from_settings(cls, s: LinearSettings, d_in: int, d_out: int) -> "LinearConnector":
        return cls(d_in, d_out)

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.proj(feats)


@CONNECTORS.register(MLPSettings)
class MLPConnector(nn.Module):
    @classmethod
    def from_settings(cls, s: MLPSettings, d_in: int, d_out: int) -> "MLPConnector":
        return cls(d_in, d_out)

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

    @classmethod
    def from_settings(cls, s: QuerySettings, d_in: int, d_out: int) -> "_QueryConnector":
        return cls(d_in, d_out, num_queries=s.queries, depth=s.depth, heads=s.heads)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        feats = self.inp(feats)
        q = self.queries.expand(feats.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, feats)
        return self.norm(q)


@CONNECTORS.register(ResamplerSettings)
class ResamplerConnector(_QueryConnector):
    def __init__(self, d_in: int, d_out: int, num_queries: int = 16, depth: int = 2, heads: int = 4) -> None:
        super().__init__(d_in, d_out, num_queries, depth, heads, self_attention=False)


@CONNECTORS.register(QFormerSettings)
class QFormerConnector(_QueryConnector):
    def __init__(self, d_in: int, d_out: int, num_queries: int = 16, depth: int = 2, heads: int = 4) -> None:
        super().__init__(d_in, d_out, num_queries, depth, heads, self_attention=True)
