"""Understanding paths (``[reader]``): how an image the model reads becomes input embeddings.

- ``shared``: the writer embeds the images it reads as it would the ones it generates (clean latents
  or VQ codes), so one tokenizer serves both directions (Chameleon, Transfusion, Show-o).
- ``vit``: decoupled encoders (Janus, LLaVA): a small ViT encodes the pixels and a connector
  (``[reader.connector]``: linear | mlp | resampler | qformer) maps its features to the language
  model's width. The ViT trains with the rest of the model; with ``reader.pretrain_steps`` it is first
  pre-trained alone as a classifier of the dataset's labels (the in-project stand-in for the separately
  pre-trained SigLIP encoder of Janus), then fine-tuned.

A clip is read over all its frames (the ViT attends across them, ``models/vit.py``): a per-token connector
(linear, mlp) gives tokens per frame, a ``(T, g, g)`` grid; a pooling one (resampler, qformer) pools the
whole clip in time and space into its query tokens, a one-frame ``(1, r, c)`` grid.
"""

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, SerializeAsAny, field_validator, model_validator
from torch import nn

from unimm.config import Config, rope_head_dim
from unimm.flops import FitFlops
from unimm.models.contracts import PrepareData, Reader
from unimm.models.vit import ViTEncoder
from unimm.optim import pretrain
from unimm.sequence import squarest_grid
from unimm.settings import CONNECTORS, READERS, WRITERS, Settings


class SharedSettings(Settings):
    """``reader.kind = "shared"``: read images through the writer's own tokenizer."""

    kind: Literal["shared"] = "shared"


class ViTSettings(Settings):
    """``reader.kind = "vit"``: a ViT + connector, decoupled from the generation tokenizer."""

    kind: Literal["vit"] = "vit"
    patch: int = Field(4, gt=0, description="patch side in pixels")
    dim: int = Field(128, gt=0)
    depth: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)
    pretrain_steps: int = Field(
        0, ge=0, description="classification pre-training steps on the dataset's labels before the LLM trains"
    )
    connector: SerializeAsAny[Settings] = Field(default_factory=lambda: CONNECTORS.validate({}, "reader.connector"))

    @field_validator("connector", mode="before")
    @classmethod
    def _connector_kind(cls, value: Any) -> Settings:
        return CONNECTORS.validate(value, "reader.connector")

    @model_validator(mode="after")
    def _heads_fit(self) -> "ViTSettings":
        if self.dim % self.heads:
            raise ValueError(f"reader.dim ({self.dim}) must be divisible by reader.heads ({self.heads})")
        rope_head_dim("reader.dim", self.dim, "reader.heads", self.heads)
        return self


@READERS.register(SharedSettings)
class SharedReader(Reader):
    """No weights of its own: the writer embeds what is read (``Reader.shared``)."""

    shared = True

    def __init__(self, settings: SharedSettings, cfg: Config, writer_grid: tuple[int, int, int]) -> None:
        super().__init__(settings)
        self.grid = writer_grid

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        if not WRITERS.cls(cfg.writer.kind).reads:
            raise ValueError(
                f"writer kind {cfg.writer.kind!r} cannot embed the images it reads: set reader.kind = 'vit'"
            )

    def read(self, ctx, images: torch.Tensor) -> torch.Tensor:
        return ctx.writer.read_inputs(ctx, images)


@READERS.register(ViTSettings)
class ViTReader(Reader):
    def __init__(self, settings: ViTSettings, cfg: Config, writer_grid: tuple[int, int, int]) -> None:
        super().__init__(settings)
        s, d = settings, cfg.data
        self.vit = ViTEncoder(d.channels, d.image_size, s.patch, s.dim, s.depth, s.heads)
        self.connector = CONNECTORS.build(s.connector, s.dim, cfg.model.dim)
        queries = getattr(s.connector, "queries", None)  # pooling connectors: that many tokens on a grid
        self.grid = (1, *squarest_grid(queries)) if queries else (d.frames or 1, self.vit.grid, self.vit.grid)

    def preparation(self, labels: torch.Tensor | None) -> list[tuple[str, int, str]]:
        steps = self.settings.pretrain_steps
        if not steps or labels is None or not bool((labels >= 0).any()):
            return []
        return [("pre-training the ViT reader as a classifier", steps, "reader.pretrain_steps")]

    def prepare(self, data: PrepareData) -> dict:
        """Pre-train the ViT as a classifier (mean-pooled features -> linear head, discarded after); its FLOPs go
        to ``flops.reader.pretrain_steps`` (the accuracy probe after it measures and is not counted)."""
        labels, steps = data.labels, self.settings.pretrain_steps
        if not self.preparation(labels):
            return {}
        keep = labels >= 0
        images, labels = data.images[keep], labels[keep]
        gen = torch.Generator().manual_seed(data.seed)
        head = nn.Linear(self.vit.norm.weight.shape[0], int(labels.max()) + 1)

        def step_loss(idx: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(head(self.vit(images[idx]).mean(1)), labels[idx])

        fit = FitFlops()  # fixed-shape batches: the first step is counted
        loss = pretrain(
            [*self.vit.parameters(), *head.parameters()],
            lambda: torch.randint(0, len(images), (64,), generator=gen),
            step_loss,
            steps,
            data.lr,
            lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, data.lr, total_steps=steps, pct_start=0.1),
            weight_decay=0.05,
            desc="pre-train ViT",
            progress=data.progress,
            flops=fit,
        )
        with torch.no_grad():
            probe = slice(0, min(len(images), 1000))
            acc = (head(self.vit(images[probe]).mean(1)).argmax(-1) == labels[probe]).float().mean()
        return {
            "vit_pretrain_loss": loss,
            "vit_pretrain_train_accuracy": float(acc),
            "flops.reader.pretrain_steps": fit.flops,
        }

    def read(self, ctx, images: torch.Tensor) -> torch.Tensor:
        """images [N, C, H, W] or clips [N, T, C, H, W] -> input embeddings [N, prod(grid), dim]."""
        return self.connector(self.vit(images))
