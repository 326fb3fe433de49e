"""Understanding paths: how an image the model reads becomes input embeddings.

``image.understand = "shared"`` needs no module here: the generation path embeds the image it
would generate (clean latents or VQ codes). ``"vit"`` decouples the two (Janus, LLaVA): a small
ViT encodes the pixels and a connector (linear | mlp | resampler | qformer) maps its features to
the language model's width. The ViT trains with the rest of the model; with
``image.vit_pretrain_steps`` it is first pre-trained alone as a classifier of the dataset's labels
(the in-project stand-in for the separately pre-trained SigLIP encoder of Janus), then fine-tuned.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from unimm.config import Config
from unimm.models.connectors import build_connector
from unimm.optim import pretrain
from unimm.tokenizers.vit import ViTEncoder


class ViTReader(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        im, d = cfg.image, cfg.data
        self.vit = ViTEncoder(d.channels, d.image_size, im.vit_patch, im.vit_dim, im.vit_depth, im.vit_heads)
        pooled = im.connector in ("resampler", "qformer")
        kw = {"num_queries": im.connector_queries, "heads": im.vit_heads} if pooled else {}
        self.connector = build_connector(im.connector, im.vit_dim, cfg.model.dim, **kw)
        if pooled:  # M query tokens, laid out on the squarest grid that holds them
            rows = max(r for r in range(1, math.isqrt(im.connector_queries) + 1) if im.connector_queries % r == 0)
            self.grid = (rows, im.connector_queries // rows)
        else:
            self.grid = (self.vit.grid, self.vit.grid)
        self.pretrain_steps, self.lr = im.vit_pretrain_steps, cfg.train.lr

    def prepare(self, images: torch.Tensor, labels: torch.Tensor | None, seed: int = 0, progress: bool = True) -> dict:
        """Pre-train the ViT as a classifier (mean-pooled features -> linear head, discarded after)."""
        if not self.pretrain_steps or labels is None or not bool((labels >= 0).any()):
            return {}
        keep = labels >= 0
        images, labels = images[keep], labels[keep]
        gen = torch.Generator().manual_seed(seed)
        head = nn.Linear(self.vit.norm.weight.shape[0], int(labels.max()) + 1)

        def step_loss() -> torch.Tensor:
            idx = torch.randint(0, len(images), (64,), generator=gen)
            return F.cross_entropy(head(self.vit(images[idx]).mean(1)), labels[idx])

        steps = self.pretrain_steps
        loss = pretrain(
            [*self.vit.parameters(), *head.parameters()], step_loss, steps, self.lr,
            lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, self.lr, total_steps=steps, pct_start=0.1),
            weight_decay=0.05, desc="pre-train ViT", progress=progress,
        )  # fmt: skip
        with torch.no_grad():
            probe = slice(0, min(len(images), 1000))
            acc = (head(self.vit(images[probe]).mean(1)).argmax(-1) == labels[probe]).float().mean()
        return {"vit_pretrain_loss": loss, "vit_pretrain_train_accuracy": float(acc)}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, C, H, W] -> input embeddings [N, h*w, dim]."""
        return self.connector(self.vit(images))


def build_reader(cfg: Config) -> nn.Module | None:
    return ViTReader(cfg) if cfg.image.understand == "vit" else None
