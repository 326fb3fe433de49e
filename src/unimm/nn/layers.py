"""Layer kinds of the backbone, one config key: ``model.layers = dense | moe | modality-moe | mot``.

Every kind obeys the block contract of ``nn/block.py`` and is built by a factory with the signature
``(BackboneConfig, layer_idx) -> block`` that ``Backbone(cfg, make_block=...)`` takes:

- ``dense``: the Llama block (``DenseBlock``).
- ``moe``: top-k routed SwiGLU experts (``MoEBlock``), optional shared experts and capacity factor.
- ``modality-moe``: the same experts split in two groups, text tokens routed among the first half and
  image tokens among the second (MoMa).
- ``mot``: Mixture-of-Transformers (``MoTBlock``): per-modality norms, q/k/v/o projections and FFN,
  one global attention (BAGEL, LMFusion).

With ``expert_hidden_dim = None`` an expert is ``hidden_dim // top_k`` wide, so a token's active FFN
parameters equal the dense model's (the comparison the survey's "dense or MoE?" question needs).
"""

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from unimm.nn.backbone import BackboneConfig, block_factory
from unimm.nn.moe import MoEBlock
from unimm.nn.mot import MoTBlock

BlockFactory = Callable[[BackboneConfig, int], nn.Module]
LAYER_KINDS = ("dense", "moe", "modality-moe", "mot")


@dataclass
class ExpertSpec:
    experts: int = 8
    top_k: int = 2
    shared: int = 0
    hidden_dim: int | None = None  # per expert; None = dense hidden_dim // top_k
    capacity_factor: float | None = None
    aux_weight: float = 0.01
    z_weight: float = 1e-3


def make_block_factory(kind: str, spec: ExpertSpec | None = None) -> BlockFactory:
    """The block factory of layer kind ``kind``."""
    spec = spec or ExpertSpec()

    def moe(cfg: BackboneConfig, i: int, groups: list[list[int]] | None = None) -> nn.Module:
        hidden = spec.hidden_dim or max(1, cfg.hidden_dim // spec.top_k)
        return MoEBlock(
            cfg.dim, cfg.heads, cfg.kv_heads, hidden, i, spec.experts, spec.top_k, spec.shared,
            spec.capacity_factor, spec.aux_weight, spec.z_weight, groups, cfg.norm_eps, cfg.qkv_bias,
        )  # fmt: skip

    def modality_moe(cfg: BackboneConfig, i: int) -> nn.Module:
        half = spec.experts // 2
        return moe(cfg, i, [list(range(half)), list(range(half, spec.experts))])

    def mot(cfg: BackboneConfig, i: int) -> nn.Module:
        return MoTBlock(cfg.dim, cfg.heads, cfg.kv_heads, cfg.hidden_dim, i, 2, cfg.norm_eps, cfg.qkv_bias)

    factories: dict[str, BlockFactory] = {"dense": block_factory, "moe": moe, "modality-moe": modality_moe, "mot": mot}
    if kind not in factories:
        raise ValueError(f"unknown layer kind {kind!r}; allowed: {', '.join(LAYER_KINDS)}")
    return factories[kind]
