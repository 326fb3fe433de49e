"""Mixture-of-Transformers block (MoT, Liang et al. 2024; the layer of BAGEL, Deng et al. 2025).

Every branch gets its own copy of all non-embedding weights of the layer: input norm, q/k/v and output
projections, post-attention norm and FFN. Token ``t`` with branch id ``m`` uses branch ``m`` for all of
them, but self-attention is ONE global attention over the whole sequence::

    q_t, k_t, v_t = qkv_{m(t)}(norm1_{m(t)}(x_t))
    h_t = x_t + o_{m(t)}(Attention(q, k, v)_t)          # all tokens attend to all (per the mask)
    y_t = h_t + ffn_{m(t)}(norm2_{m(t)}(h_t))

so the branches interact only through attention, and the compute per token is that of a dense layer.
The branch id is the modality (text 0, image 1) or, with ``layers.route = "role"``, the role (understanding
0: text and images read; generation 1: images being generated), as ``nn/layers.py`` routes.
"""

import torch
from torch import nn

from unimm.nn.attention import attend
from unimm.nn.block import DenseBlock
from unimm.nn.kv_cache import KVCache


class _Dispatch:
    """The permutation that makes each branch's tokens contiguous, computed once per forward and reused by
    every per-branch sub-layer. When all tokens share one branch (e.g. pure text, or decoding one token) it
    is the identity and the branch runs on the tensor as is."""

    def __init__(self, modality: torch.Tensor | None, num_branches: int) -> None:
        self.single: int | None = 0
        if modality is None or num_branches == 1:
            return
        branch = modality.reshape(-1).clamp(0, num_branches - 1)
        self.counts: list[int] = torch.bincount(branch, minlength=num_branches).tolist()
        present = [i for i, c in enumerate(self.counts) if c > 0]
        if len(present) == 1:
            self.single = present[0]
            return
        self.single = None
        self.order = branch.argsort(stable=True)  # sorted position -> token
        self.inverse = self.order.argsort()  # token -> sorted position

    def __call__(self, branches: nn.ModuleList, x: torch.Tensor, fn) -> torch.Tensor:
        """x [B, L, d_in] -> [B, L, d_out], computing ``fn(branches[m], x_tokens_of_m)`` for each branch m."""
        if self.single is not None:
            return fn(branches[self.single], x)
        parts = x.reshape(-1, x.shape[-1])[self.order].split(self.counts)
        out = torch.cat([fn(branches[i], p) for i, p in enumerate(parts) if p.shape[0] > 0])
        return out[self.inverse].view(*x.shape[:-1], out.shape[-1])


class MoTBlock(nn.Module):
    """``num_branches`` sets of dense-layer weights selected per token by its branch id (clamped to
    ``num_branches - 1``; ``modality=None`` means branch 0), with one global GQA attention (RoPE, SDPA,
    KV cache) exactly as :class:`~unimm.nn.attention.Attention` does it.

    ``branches[m]`` is a :class:`~unimm.nn.block.DenseBlock` used only as a container of weights (its own
    forward is never called here), so a branch's parameter names, e.g. ``branches.1.self_attn.qkv_proj.weight``,
    are the dense block's with a ``branches.m.`` prefix, and dense checkpoints map onto every branch.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        kv_heads: int,
        hidden_dim: int,
        layer_idx: int,
        num_branches: int = 2,
        norm_eps: float = 1e-6,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        assert dim % heads == 0 and heads % kv_heads == 0 and num_branches >= 1
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.layer_idx, self.num_branches = layer_idx, num_branches
        self.split = (heads * self.head_dim, kv_heads * self.head_dim, kv_heads * self.head_dim)
        self.branches = nn.ModuleList(
            DenseBlock(dim, heads, kv_heads, hidden_dim, layer_idx, norm_eps, qkv_bias) for _ in range(num_branches)
        )

    @torch.no_grad()
    def load_from_dense(self, dense: DenseBlock) -> "MoTBlock":
        """Copy a dense block's weights into every branch (MoT initialised from a pretrained dense LM)."""
        for branch in self.branches:
            branch.load_state_dict(dense.state_dict())
        return self

    @classmethod
    def from_dense(cls, dense: DenseBlock, num_branches: int = 2) -> "MoTBlock":
        """A MoT block shaped like ``dense`` whose branches all start as copies of it."""
        attn = dense.self_attn
        block = cls(
            dim=dense.input_layernorm.weight.shape[0],
            heads=attn.heads,
            kv_heads=attn.kv_heads,
            hidden_dim=dense.mlp.down_proj.in_features,
            layer_idx=attn.layer_idx,
            num_branches=num_branches,
            norm_eps=dense.input_layernorm.eps,
            qkv_bias=attn.qkv_proj.bias is not None,
        )
        return block.to(dense.input_layernorm.weight).load_from_dense(dense)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None,
    ) -> torch.Tensor:
        """Global attention over all tokens: q [B, L, H*D], k/v [B, L, Hkv*D] -> [B, L, H*D].
        The same core as ``Attention.forward`` (``nn.attention.attend``)."""
        return attend(q, k, v, self.heads, self.kv_heads, self.layer_idx, attn_mask, rope, cache)

    def forward(
        self,
        x: torch.Tensor,
        modality: torch.Tensor | None,
        attn_mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        route = _Dispatch(modality, self.num_branches)
        qkv = route(self.branches, x, lambda br, t: br.self_attn.qkv_proj(br.input_layernorm(t)))
        out = self.attend(*qkv.split(self.split, dim=-1), attn_mask, rope, cache)
        x = x + route(self.branches, out, lambda br, t: br.self_attn.o_proj(t))
        # a branch's feed-forward is a dense SwiGLU (no aux losses); the dispatch already chose it by branch id
        x = x + route(self.branches, x, lambda br, t: br.mlp(br.post_attention_layernorm(t))[0])
        return x, {}
