"""Generation through a separate diffusion decoder (``connector``: Emu, DreamLLM, SEED-X, MetaQuery).

The language model does not produce image tokens. In the text-to-image layout its image span holds
``image.gen_queries`` learnable query tokens; their final hidden states, mapped by a trainable
connector (an MLP), are the conditioning sequence of a small DiT (``models/dit.py``) that denoises
the image's latent patches (pixels or a VAE's) by ``objective.denoiser``, reading the condition by
cross-attention or in context (``image.decoder_conditioning``). Understanding goes through the ViT
reader, so the LLM never sees generation latents.

``image.decoder_train``:
- ``joint``: the decoder trains from scratch with the LLM, through the diffusion loss;
- ``frozen`` (MetaQuery's cheap recipe): before the LLM trains, the decoder is pre-trained alone as a
  caption-to-image model on its own caption embedding (``decoder_pretrain_steps``), then frozen;
  only the queries, the connector and the LLM learn to drive it.
Classifier-free guidance runs the LLM on the prompt and on the empty prompt (trained by caption
dropout) and mixes the decoder's two predictions.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from unimm.config import Config
from unimm.models.connectors import build_connector
from unimm.models.dit import DiT
from unimm.models.latent_writer import build_image_codec
from unimm.models.writer import Writer
from unimm.objectives.image_diffusion import build_denoiser
from unimm.optim import pretrain, warmup_cosine
from unimm.samplers.guidance import classifier_free_guidance


def squarest_grid(count: int) -> tuple[int, int]:
    """The (rows, cols) grid closest to square that holds exactly ``count`` tokens."""
    rows = max(r for r in range(1, math.isqrt(count) + 1) if count % r == 0)
    return rows, count // rows


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


class ConnectorWriter(Writer):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        im = cfg.image
        self.codec = build_image_codec(cfg)
        self.grid = squarest_grid(im.gen_queries)
        self.queries = nn.Parameter(torch.randn(im.gen_queries, cfg.model.dim) * 0.02)
        self.connector = build_connector("mlp", cfg.model.dim, im.decoder_dim)
        n_patches = self.codec.grid[0] * self.codec.grid[1]
        self.decoder = DiT(
            self.codec.patch_dim, n_patches, im.decoder_dim, im.decoder_dim, im.decoder_depth, im.decoder_heads,
            im.decoder_conditioning,
        )  # fmt: skip
        self.objective = build_denoiser(cfg.objective)
        self.repeat, self.frozen = cfg.objective.denoise_batch, im.decoder_train == "frozen"
        self.pretrain_steps, self.lr = im.decoder_pretrain_steps, cfg.train.lr
        self.cond_drop, self.max_len, self.dim = cfg.objective.cond_drop, cfg.model.max_seq_len, im.decoder_dim
        self.captions: CaptionConditioner | None = None

    def bind(self, vocab_offset: int) -> None:
        """The text vocabulary is known now: the decoder's own caption embedding (frozen mode) needs it."""
        if self.frozen:
            self.captions = CaptionConditioner(vocab_offset, self.dim, self.max_len)

    def fixed_modules(self) -> list[nn.Module]:
        return [self.codec, self.decoder, self.captions] if self.frozen else [self.codec]

    def denoise_loss(self, x0: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor | None = None):
        """Diffusion loss of the decoder on x0 [G, n, P] given cond [G, M, c], ``denoise_batch`` draws each."""
        k = self.repeat
        x0, cond = x0.repeat(k, 1, 1), cond.repeat(k, 1, 1)
        cond_mask = cond_mask.repeat(k, 1) if cond_mask is not None else None
        t = self.objective.sample_time(x0.shape[0]).to(x0.device)
        noise = torch.randn_like(x0)
        x_t, target = self.objective.corrupt(x0.flatten(0, 1), noise.flatten(0, 1), t.repeat_interleave(x0.shape[1]))
        pred = self.decoder(x_t.view_as(x0), self.objective.level(t), cond, cond_mask)
        return self.objective.loss(pred, target.view_as(x0))

    def prepare(self, images: torch.Tensor, seed: int = 0, progress: bool = True, captions=None) -> dict:
        """Fit the codec; in ``frozen`` mode pre-train the decoder on (image, caption ids) pairs, then freeze it."""
        stats = self.codec.prepare(images, seed=seed, progress=progress)
        if not self.frozen:
            return stats
        if captions is None:
            raise ValueError("image.decoder_train = 'frozen' pre-trains the decoder on captions; none were given")
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            latents = torch.cat([self.codec.encode(images[i : i + 512]) for i in range(0, len(images), 512)])

        def step_loss() -> torch.Tensor:
            idx = torch.randint(0, len(images), (64,), generator=gen).tolist()
            drop = (torch.rand(len(idx), generator=gen) < self.cond_drop).tolist()
            cond, mask = self.captions([[] if d else captions[i] for i, d in zip(idx, drop, strict=True)])
            return self.denoise_loss(latents[idx], cond, mask)[0]

        steps = self.pretrain_steps
        loss = pretrain(
            [*self.decoder.parameters(), *self.captions.parameters()], step_loss, steps, self.lr,
            lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(min(100, steps // 10), steps, 0.1)),
            desc="pre-train decoder", progress=progress,
        )  # fmt: skip
        for module in self.fixed_modules():
            module.requires_grad_(False)
        return {**stats, "decoder_pretrain_loss": loss}

    def read_inputs(self, backbone, images: torch.Tensor) -> torch.Tensor:
        raise ValueError("the connector writer cannot embed images it reads; use image.understand = 'vit'")

    def train_inputs(self, backbone, images: torch.Tensor, generate: torch.Tensor, generator=None):
        """The query tokens in every generated image's span; the images' latents are the decoder's targets."""
        with torch.no_grad():
            x0 = self.codec.encode(images[generate])
        return self.queries.expand(images.shape[0], -1, -1), DecoderTargets(x0)

    def condition(self, hidden_queries: torch.Tensor) -> torch.Tensor:
        """Final hidden states of the queries [G, N, dim] -> the decoder's condition [G, N, decoder_dim]."""
        return self.connector(hidden_queries)

    def loss(self, backbone, hidden: torch.Tensor, gen_pos: torch.Tensor, state: DecoderTargets):
        cond = self.condition(hidden[gen_pos].view(state.x0.shape[0], -1, hidden.shape[-1]))
        return self.denoise_loss(state.x0, cond)

    def prompt_condition(self, model, prompts: list[str], guided: bool) -> torch.Tensor:
        """The decoder's condition for each prompt [B, N, decoder_dim] (then for the empty prompt when guided)."""
        batch, base = model.generation_batch(prompts, guided=guided)
        img = batch.image_id >= 0
        x = base.masked_scatter(img.unsqueeze(-1), self.queries.expand(len(batch.tokens), -1, -1).to(base.dtype))
        hidden, _ = model.backbone(x, batch.positions, batch.modality, batch.attn_mask)
        return self.condition(hidden[img].view(len(batch.tokens), -1, hidden.shape[-1]))

    @torch.no_grad()
    def generate(
        self, model, prompts: list[str], scale: float, steps: int, sampler: str, generator=None, use_cache: bool = True
    ) -> torch.Tensor:
        """One LLM pass over prompt + queries gives the condition; the decoder's sampler does the rest."""
        guided = scale != 1.0
        cond = self.prompt_condition(model, prompts, guided)

        def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.decoder(x_t, self.objective.level(t), cond)

        fn = classifier_free_guidance(model_fn, scale) if guided else model_fn
        n, p = self.codec.grid[0] * self.codec.grid[1], self.codec.patch_dim
        noise = torch.randn(len(prompts), n, p, generator=generator).to(cond.device)
        return self.codec.decode(self.objective.run_sampler(sampler, fn, noise, steps, generator)).clamp(-1, 1)
