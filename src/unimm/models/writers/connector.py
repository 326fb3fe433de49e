"""Generation through a separate diffusion decoder (``connector``: Emu, DreamLLM, SEED-X, MetaQuery).

The language model does not produce image tokens. In the text-to-image layout its image span holds
``writer.queries`` learnable query tokens; their final hidden states, mapped by a trainable
connector (an MLP), are the conditioning sequence of a small DiT (``models/dit.py``) that denoises
the image's latent patches (pixels or a VAE's) with the ``[denoiser]``, reading the condition by
cross-attention or in context (``writer.conditioning``). Understanding goes through the ViT
reader, so the LLM never sees generation latents.

``writer.train``:
- ``joint``: the decoder trains from scratch with the LLM, through the diffusion loss;
- ``frozen`` (MetaQuery's cheap recipe): before the LLM trains, the decoder is pre-trained alone as a
  caption-to-image model on its own caption embedding (``writer.pretrain_steps``), then frozen;
  only the queries, the connector and the LLM learn to drive it;
- ``finetune`` (MetaQuery's main recipe, Emu, SEED-X: a pre-trained diffusion decoder tuned further): pre-trained
  alone as in ``frozen``, then trained on with the LLM through the diffusion loss.
Classifier-free guidance runs the LLM on the prompt and on the empty prompt (trained by caption
dropout) and mixes the decoder's two predictions.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from unimm.config import Config
from unimm.flops import FitFlops, count_flops
from unimm.models.connectors import MLPConnector
from unimm.models.contracts import EVAL_GRID, PrepareData, Writer
from unimm.models.dit import DiT
from unimm.optim import pretrain, warmup_cosine
from unimm.samplers.guidance import classifier_free_guidance
from unimm.sequence import squarest_grid
from unimm.settings import DENOISERS, WRITERS, Settings
from unimm.tasks import ImagePrompt


class ConnectorSettings(Settings):
    """``writer.kind = "connector"``: query tokens whose states condition a separate DiT decoder."""

    kind: Literal["connector"] = "connector"
    weight: float = Field(5.0, ge=0, description="lambda in L = w_text * L_text + lambda * L_image")
    queries: int = Field(16, gt=0, description="query tokens whose states condition the decoder")
    dim: int = Field(128, gt=0, description="width of the DiT decoder")
    depth: int = Field(4, gt=0)
    heads: int = Field(4, gt=0)
    conditioning: Literal["cross", "in-context"] = Field(
        "cross", description="the decoder reads its condition by cross-attention or in context"
    )
    train: Literal["joint", "frozen", "finetune"] = Field(
        "joint",
        description="decoder trained from scratch with the LLM (joint), or pre-trained alone on captions then "
        "frozen (frozen) or trained on with the LLM (finetune)",
    )
    pretrain_steps: int = Field(0, ge=0, description="the decoder's own caption->image pre-training steps")
    denoise_batch: int = Field(4, gt=0, description="noise draws per target image")

    @model_validator(mode="after")
    def _frozen_needs_pretraining(self) -> "ConnectorSettings":
        if self.train != "joint" and self.pretrain_steps == 0:
            raise ValueError(
                f"writer.train = {self.train!r} pre-trains the decoder: it needs writer.pretrain_steps > 0"
            )
        return self


class CaptionConditioner(nn.Module):
    """The decoder's own condition for pre-training: caption token embeddings + positions, after a
    learned leading token that is always present (an empty caption is the unconditional input)."""

    def __init__(self, vocab: int, dim: int, max_len: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(max_len + 1, dim) * 0.02)
        self.lead = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-id lists -> (condition [B, 1 + L, dim], mask [B, 1 + L] bool)."""
        length = max((len(r) for r in ids), default=0)
        dev = self.lead.device
        padded = torch.tensor([r + [0] * (length - len(r)) for r in ids], dtype=torch.long, device=dev)
        mask = torch.tensor([[True] * (1 + len(r)) + [False] * (length - len(r)) for r in ids], device=dev)
        x = torch.cat([self.lead.expand(len(ids), 1, -1), self.tokens(padded.view(len(ids), length))], 1)
        return x + self.pos[: length + 1], mask


@dataclass
class DecoderTargets:
    x0: torch.Tensor  # [G, n, P] clean latent patches of the images to generate


@WRITERS.register(ConnectorSettings)
class ConnectorWriter(Writer):
    denoises = True
    reads = False  # the LLM never sees generation latents: understanding goes through a ViT reader
    corrupts_generated = False  # a generated span holds the query tokens, in training as at sampling

    def __init__(self, settings: ConnectorSettings, cfg: Config) -> None:
        super().__init__(settings)
        self.codec = self.build_codec(cfg)
        self.grid = (1, *squarest_grid(settings.queries))
        self.queries = nn.Parameter(torch.randn(settings.queries, cfg.model.dim) * 0.02)
        self.connector = MLPConnector(cfg.model.dim, settings.dim)
        self.decoder = DiT(
            patch_dim=self.codec.patch_dim,
            num_patches=math.prod(self.codec.grid),
            dim=settings.dim,
            cond_dim=settings.dim,
            depth=settings.depth,
            heads=settings.heads,
            conditioning=settings.conditioning,
        )
        self.objective = DENOISERS.build(cfg.denoiser)
        self.frozen, self.max_len = settings.train == "frozen", cfg.model.max_seq_len
        self.pretrained = settings.train != "joint"  # frozen or finetune: the decoder is pre-trained alone first
        self.captions: CaptionConditioner | None = None

    def bind(self, vocab_offset: int) -> None:
        """The text vocabulary is known now: the decoder's own caption embedding (pre-training) needs it."""
        if self.pretrained:
            self.captions = CaptionConditioner(vocab_offset, self.settings.dim, self.max_len)

    def fixed_modules(self) -> list[nn.Module]:
        """The codec; after pre-training the caption embedding (only pre-training uses it) and, frozen, the decoder."""
        if not self.pretrained:
            return [self.codec]
        return [self.codec, self.captions, *([self.decoder] if self.frozen else [])]

    def denoise_loss(
        self,
        x0: torch.Tensor,
        cond: torch.Tensor,
        generator: torch.Generator | None,
        cond_mask: torch.Tensor | None = None,
    ):
        """Diffusion loss of the decoder on x0 [G, n, P] given cond [G, M, c], ``denoise_batch`` draws each;
        time and noise come from ``generator``."""
        k = self.settings.denoise_batch
        x0, cond = x0.repeat(k, 1, 1), cond.repeat(k, 1, 1)
        cond_mask = cond_mask.repeat(k, 1) if cond_mask is not None else None
        t = self.objective.sample_time(x0.shape[0], generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        return self.objective.loss(*self.denoise_prediction(x0, noise, t, cond, cond_mask))

    def denoise_prediction(
        self,
        x0: torch.Tensor,
        noise: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        cond_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's prediction for x0 [G, n, P] noised with noise [G, n, P] to times t [G], given cond
        [G, M, c], and its regression target, both [G, n, P]."""
        x_t, target = self.objective.corrupt(x0.flatten(0, 1), noise.flatten(0, 1), t.repeat_interleave(x0.shape[1]))
        pred = self.decoder(x_t.view_as(x0), self.objective.level(t), cond, cond_mask)
        return pred, target.view_as(x0)

    def preparation(self) -> list[tuple[str, int, str]]:
        decoder = [("pre-training the caption-to-image decoder", self.settings.pretrain_steps, "writer.pretrain_steps")]
        return super().preparation() + (decoder if self.pretrained else [])

    def prepare(self, data: PrepareData) -> dict:
        """Fit the codec; in ``frozen`` / ``finetune`` mode pre-train the decoder on (image, caption ids) pairs (then
        freeze it, or leave it to train on with the LLM).
        The pre-training's FLOPs go to ``flops.writer.decoder_latents`` (encoding every image once) and
        ``flops.writer.pretrain_steps`` (a step's cost is set by its longest caption: each length counted once)."""
        images = data.images
        stats = super().prepare(data)
        if not self.pretrained:
            return stats
        if data.captions is None:
            raise ValueError(f"writer.train = {self.settings.train!r} pre-trains the decoder on captions; none given")
        captions = data.captions
        gen = torch.Generator().manual_seed(data.seed)
        with torch.no_grad(), count_flops() as encoding:
            latents = torch.cat([self.codec.encode(images[i : i + 512]) for i in range(0, len(images), 512)])

        def draw() -> tuple[list[int], list[list[int]]]:
            idx = torch.randint(0, len(images), (64,), generator=gen).tolist()
            drop = (torch.rand(len(idx), generator=gen) < data.cond_drop).tolist()
            return idx, [[] if d else captions[i] for i, d in zip(idx, drop, strict=True)]

        def step_loss(batch: tuple[list[int], list[list[int]]]) -> torch.Tensor:
            idx, ids = batch
            cond, mask = self.captions(ids)
            return self.denoise_loss(latents[idx], cond, gen, mask)[0]

        steps, fit = self.settings.pretrain_steps, FitFlops()
        loss = pretrain(
            [*self.decoder.parameters(), *self.captions.parameters()],
            draw,
            step_loss,
            steps,
            data.lr,
            lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(min(100, steps // 10), steps, 0.1)),
            desc="pre-train decoder",
            progress=data.progress,
            flops=fit,
            key=lambda batch: max(map(len, batch[1])),  # the padded caption length
        )
        for module in self.fixed_modules():
            module.requires_grad_(False)
        spent = {"flops.writer.decoder_latents": encoding.get_total_flops(), "flops.writer.pretrain_steps": fit.flops}
        return {**stats, "decoder_pretrain_loss": loss, **spent}

    def read_inputs(self, ctx, images: torch.Tensor) -> torch.Tensor:
        raise ValueError("the connector writer cannot embed images it reads; use reader.kind = 'vit'")

    def context_inputs(self, ctx, images: torch.Tensor) -> torch.Tensor:
        """A finished image's span holds the query tokens, as in training: later positions never see its pixels."""
        return self.queries.expand(images.shape[0], -1, -1)

    def train_inputs(self, ctx, images: torch.Tensor, generate: torch.Tensor, generator=None):
        """The query tokens in every generated image's span; the images' latents are the decoder's targets."""
        with torch.no_grad():
            x0 = self.codec.encode(images[generate])
        return self.queries.expand(images.shape[0], -1, -1), DecoderTargets(x0)

    def condition(self, hidden_queries: torch.Tensor) -> torch.Tensor:
        """Final hidden states of the queries [G, N, dim] -> the decoder's condition [G, N, decoder_dim]."""
        return self.connector(hidden_queries)

    def loss(self, ctx, hidden: torch.Tensor, gen_pos: torch.Tensor, state: DecoderTargets, generator=None):
        cond = self.condition(hidden[gen_pos].view(state.x0.shape[0], -1, hidden.shape[-1]))
        return self.denoise_loss(state.x0, cond, generator)

    def prompt_condition(self, ctx, prompts: list[str | ImagePrompt], guided: bool) -> torch.Tensor:
        """The decoder's condition for each prompt [B, N, decoder_dim] (then for the empty prompt when guided)."""
        batch, base = ctx.generation_batch(prompts, guided=guided)
        return self.condition(ctx.run_with_images(base, batch, self.queries.expand(len(batch.tokens), -1, -1)))

    @torch.no_grad()
    def eval_loss(self, ctx, images: torch.Tensor, prompts: list[str], generator=None) -> torch.Tensor:
        """The decoder's denoising loss of each image given its prompt (squared error of the denoiser's target per
        latent element of the codec), conditioned as in training on the connector's map of the queries' states
        after the prompt: at each time t = ``time_at(u)``, u in ``EVAL_GRID``, one noise draw from ``generator``,
        shared by the images; the mean over the five times. It compares only between models with the same codec
        and denoiser."""
        cond = self.prompt_condition(ctx, prompts, guided=False)
        x0 = self.codec.encode(images)
        per_time = []
        for u in EVAL_GRID:
            t = self.objective.time_at(torch.full((len(x0),), u)).to(x0.device)
            noise = torch.randn(x0.shape[1:], generator=generator).to(x0).expand_as(x0)
            per_time.append(self.objective.row_loss(*self.denoise_prediction(x0, noise, t, cond)))
        return torch.stack(per_time).mean(0)

    @torch.no_grad()
    def generate(
        self,
        ctx,
        prompts: list[str | ImagePrompt],
        scale: float,
        steps: int,
        sampler: str,
        generator=None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """One LLM pass over prompt + queries gives the condition; the decoder's sampler does the rest."""
        guided = scale != 1.0
        cond = self.prompt_condition(ctx, prompts, guided)

        def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.decoder(x_t, self.objective.level(t), cond)

        fn = classifier_free_guidance(model_fn, scale) if guided else model_fn
        n, p = math.prod(self.codec.grid), self.codec.patch_dim
        noise = torch.randn(len(prompts), n, p, generator=generator).to(cond.device)
        return self.codec.decode(self.objective.run_sampler(sampler, fn, noise, steps, generator)).clamp(-1, 1)
