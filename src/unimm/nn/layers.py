"""Layer kinds of the backbone, the ``layers`` part: ``kind = dense | moe | modality-moe | mot``.

Each kind is a class registered on ``unimm.settings.LAYERS`` with its own settings model. An instance is
the block factory ``(BackboneConfig, layer_idx) -> block`` that ``Backbone(cfg, make_block=...)`` takes::

    settings = LAYERS.validate({"kind": "moe", "experts": 4}, "layers")
    backbone = Backbone(cfg, make_block=LAYERS.build(settings))

Every block obeys the block contract of ``nn/block.py``:

- ``dense``: the Llama block (``DenseBlock`` with a SwiGLU feed-forward).
- ``moe``: the same block with a top-k routed ``MoEFeedForward`` of SwiGLU experts, optional shared
  experts and capacity factor.
- ``modality-moe``: the same experts split in two halves, text tokens routed among the first half and
  image tokens among the second (MoMa).
- ``mot``: Mixture-of-Transformers (``MoTBlock``): per-branch norms, q/k/v/o projections and FFN,
  one global attention (BAGEL, LMFusion).

Blocks route by the ids ``Layers.branch_ids(modality, generated)`` gives for each position. The kinds that
route by them (``modality-moe``, ``mot``) have ``route``: ``"modality"`` (text 0, every image token 1) or
``"role"`` (text and images read 0, images being generated 1: BAGEL's understanding and generation experts).
The other kinds get the modality. Every route sends text to 0 and a generated image token to 1, so a decoding
step (which appends one of those) is routed by its modality under any route.

With ``expert_hidden_dim = None`` an expert is ``hidden_dim // top_k`` wide, so a token's active FFN
parameters equal the dense model's (the comparison the survey's "dense or MoE?" question needs).
"""

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from unimm.nn.backbone import BackboneConfig, block_factory
from unimm.nn.block import DenseBlock
from unimm.nn.moe import MoEFeedForward
from unimm.nn.mot import MoTBlock
from unimm.sequence import TEXT
from unimm.settings import LAYERS, Part, Settings

BlockFactory = Callable[[BackboneConfig, int], nn.Module]


def by_modality(modality: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """Branch = modality: text 0, image tokens 1 whether read or generated."""
    return modality


def by_role(modality: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """Branch 0 for text and the images read (understanding), the modality (1) for images being generated."""
    return modality.masked_fill(~generated, TEXT)


# ``layers.route`` -> the branch ids [B, L] of positions with modality and generated flags [B, L]
ROUTES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"modality": by_modality, "role": by_role}


class Layers(Part):
    """A layer kind: built from its settings, then called as the block factory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, cfg: BackboneConfig, layer_idx: int) -> nn.Module:
        """Block ``layer_idx`` of a backbone shaped by ``cfg``."""
        raise NotImplementedError

    def branch_ids(self, modality: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """The ids [B, L] the blocks get as ``modality``: the modality itself unless the kind has a ``route``."""
        return modality

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"


class DenseLayersSettings(Settings):
    kind: Literal["dense"] = "dense"


@LAYERS.register(DenseLayersSettings)
class DenseLayers(Layers):
    """The Llama block: attention, then a SwiGLU of width ``cfg.hidden_dim``."""

    def __call__(self, cfg: BackboneConfig, layer_idx: int) -> nn.Module:
        return block_factory(cfg, layer_idx)


class RouteSettings(Settings):
    """The ``route`` of the kinds whose blocks pick weights by the id of each token (modality-moe, mot)."""

    route: Literal["modality", "role"] = Field(
        "modality",
        description="the ids blocks route by: modality (text 0, image 1) or role (text and images read 0, "
        "images being generated 1: BAGEL's understanding / generation experts)",
    )


class Routed(Layers):
    """A kind whose blocks get the ids of its ``route`` setting."""

    settings: RouteSettings

    def branch_ids(self, modality: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        return ROUTES[self.settings.route](modality, generated)


class ExpertSettings(Settings):
    """The fields shared by the routed kinds (moe, modality-moe)."""

    experts: int = Field(8, gt=0, description="routed experts per layer (modality-moe: half text, half image)")
    top_k: int = Field(2, gt=0, description="experts per token (inside its modality's half for modality-moe)")
    shared_experts: int = Field(0, ge=0, description="always-on shared experts (DeepSeekMoE)")
    expert_hidden_dim: int | None = Field(
        None, gt=0, description="SwiGLU width of one expert; None = hidden_dim // top_k (dense-equal active params)"
    )
    capacity_factor: float | None = Field(None, gt=0, description="expert capacity in training; None = no limit")
    aux_weight: float = Field(0.01, ge=0, description="weight of the load-balancing loss (Switch)")
    z_weight: float = Field(1e-3, ge=0, description="weight of the router z-loss (ST-MoE)")

    def check_top_k(self, group: int) -> None:
        """A token routes among ``group`` experts: it cannot pick more."""
        if self.top_k > group:
            raise ValueError(f"layers.top_k ({self.top_k}) exceeds the {group} experts a token can route to")


class MoELayersSettings(ExpertSettings):
    kind: Literal["moe"] = "moe"

    @model_validator(mode="after")
    def _top_k_fits(self) -> "MoELayersSettings":
        self.check_top_k(self.experts)
        return self


class ModalityMoELayersSettings(RouteSettings, ExpertSettings):
    kind: Literal["modality-moe"] = "modality-moe"

    @model_validator(mode="after")
    def _halves(self) -> "ModalityMoELayersSettings":
        if self.experts % 2:
            raise ValueError(f"layers.experts ({self.experts}) must be even for modality-moe (text / image halves)")
        self.check_top_k(self.experts // 2)
        return self


@LAYERS.register(MoELayersSettings)
class MoELayers(Layers):
    """The dense block with a routed :class:`~unimm.nn.moe.MoEFeedForward` as its ``mlp``."""

    settings: ExpertSettings

    def groups(self) -> list[list[int]] | None:
        """Expert indices per modality; None = every token routes among all experts."""
        return None

    def __call__(self, cfg: BackboneConfig, layer_idx: int) -> nn.Module:
        s = self.settings
        hidden = s.expert_hidden_dim or max(1, cfg.hidden_dim // s.top_k)

        def make_mlp() -> MoEFeedForward:
            return MoEFeedForward(
                cfg.dim,
                hidden,
                num_experts=s.experts,
                top_k=s.top_k,
                num_shared=s.shared_experts,
                capacity_factor=s.capacity_factor,
                aux_weight=s.aux_weight,
                z_weight=s.z_weight,
                groups=self.groups(),
            )

        return DenseBlock(cfg.dim, cfg.heads, cfg.kv_heads, hidden, layer_idx, cfg.norm_eps, cfg.qkv_bias, make_mlp)


@LAYERS.register(ModalityMoELayersSettings)
class ModalityMoELayers(Routed, MoELayers):
    """MoMa: tokens of id 0 (text) route among the first half of the experts, of id 1 (image) the second."""

    settings: ModalityMoELayersSettings

    def groups(self) -> list[list[int]]:
        half = self.settings.experts // 2
        return [list(range(half)), list(range(half, self.settings.experts))]


class MoTLayersSettings(RouteSettings):
    kind: Literal["mot"] = "mot"


@LAYERS.register(MoTLayersSettings)
class MoTLayers(Routed):
    """Two branches of dense weights, one global attention: by modality text 0 / image 1, by role
    understanding 0 / generation 1."""

    def __call__(self, cfg: BackboneConfig, layer_idx: int) -> nn.Module:
        return MoTBlock(cfg.dim, cfg.heads, cfg.kv_heads, cfg.hidden_dim, layer_idx, 2, cfg.norm_eps, cfg.qkv_bias)
