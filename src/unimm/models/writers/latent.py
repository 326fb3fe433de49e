"""Continuous generation path (transfusion, bagel): latent patches denoised by diffusion or flow.

The codec (raw pixel patches or a small VAE's latent patches) turns images into patch vectors;
``PatchEmbed`` adds each patch's noise-level embedding on the way in, ``PatchHead`` maps hidden
states back to the objective's regression target, and the objective's sampler (DDPM/DDIM/flow)
turns noise into latents at generation time, with classifier-free guidance.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from unimm.config import Config
from unimm.models.contracts import EVAL_GRID, Writer
from unimm.models.image_io import PatchEmbed, PatchHead
from unimm.samplers.guidance import classifier_free_guidance
from unimm.settings import DENOISERS, WRITERS, Settings
from unimm.tasks import ImagePrompt, as_prompt


class LatentSettings(Settings):
    """``writer.kind = "latent"``: continuous patches denoised in the sequence (Transfusion, BAGEL)."""

    kind: Literal["latent"] = "latent"
    weight: float = Field(5.0, ge=0, description="lambda in L = w_text * L_text + lambda * L_image")
    read_noise: float = Field(
        0.0, ge=0, le=1, description="images that are read get noise up to this fraction of t (0 = clean)"
    )
    residual: bool = Field(
        False,
        description="an image generated right after an image of its grid (an edit's target after its source) is "
        "denoised as the difference of their latents and decoded as base + difference: what it leaves alone is 0",
    )


@dataclass
class LatentTargets:
    target: torch.Tensor  # [G, n, P] regression targets of the generated images


@WRITERS.register(LatentSettings)
class LatentWriter(Writer):
    denoises = True
    starts_from_source = True
    keeps_source = True

    def __init__(self, settings: LatentSettings, cfg: Config) -> None:
        super().__init__(settings)
        self.codec = self.build_codec(cfg)
        self.grid = self.codec.grid
        self.embed = PatchEmbed(self.codec.patch_dim, cfg.model.dim)
        self.head = PatchHead(cfg.model.dim, self.codec.patch_dim)
        self.objective = DENOISERS.build(cfg.denoiser)
        self.residual = settings.residual

    def read_inputs(self, ctx, images: torch.Tensor) -> torch.Tensor:
        """Clean images [N, C, H, W] -> input embeddings [N, n, dim] (noise level 0)."""
        x0 = self.codec.encode(images)
        return self.embed(x0.flatten(0, 1), x0.new_zeros(x0.shape[0] * x0.shape[1])).view(*x0.shape[:2], -1)

    def train_inputs(self, ctx, images: torch.Tensor, generate: torch.Tensor, generator=None, bases=None):
        """Noised inputs for the images to generate; clean (or noise-capped) ones for the images read. With
        ``residual``, a generated image with a base is noised (and predicted) as its latent minus the base's."""
        max_noise = self.settings.read_noise
        with torch.no_grad():  # the codec is fixed while the transformer trains
            x0 = self.codec.encode(images)
            if bases is not None and bases[0].any():
                has = bases[0] & generate
                x0 = x0.index_put((has.nonzero()[:, 0],), x0[has] - self.codec.encode(bases[1][has]))
        n, dev = x0.shape[0], x0.device
        t = self.objective.sample_time(n, generator).to(dev)
        t_read = self.objective.time_at(torch.rand(n, generator=generator).to(dev) * max_noise)
        t = torch.where(generate, t, t_read)
        noise = torch.randn(x0.shape, generator=generator).to(dev)
        x_t, target = self.corrupt(x0, noise, t)
        level = self.objective.level(t)
        if max_noise == 0:  # read images exactly clean
            level = torch.where(generate, level, torch.zeros_like(level))
            x_t = torch.where(generate[:, None, None], x_t, x0)
        return self.embed_noised(x_t, level), LatentTargets(target[generate])

    def corrupt(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x0, noise [N, n, P], t [N] -> (x_t, the regression target), both [N, n, P]."""
        x_t, target = self.objective.corrupt(x0.flatten(0, 1), noise.flatten(0, 1), t.repeat_interleave(x0.shape[1]))
        return x_t.view_as(x0), target.view_as(x0)

    def embed_noised(self, x_t: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """x_t [N, n, P] at noise levels [N] -> input embeddings [N, n, dim]."""
        return self.embed(x_t.flatten(0, 1), level.repeat_interleave(x_t.shape[1])).view(*x_t.shape[:2], -1)

    def loss(self, ctx, hidden: torch.Tensor, gen_pos: torch.Tensor, state: LatentTargets, generator=None):
        pred = self.head(hidden[gen_pos])
        return self.objective.loss(pred, state.target.flatten(0, 1))

    @torch.no_grad()
    def eval_loss(self, ctx, images: torch.Tensor, prompts: list[str], generator=None) -> torch.Tensor:
        """The denoising loss of each image given its prompt: the training loss (squared error of the denoiser's
        target, per latent element of the codec) at each time t = ``time_at(u)``, u in ``EVAL_GRID`` (flow: t =
        0.1 ... 0.9; DDPM: steps 100 ... 899 of 1000), with one noise draw from ``generator`` per time, shared by
        the images; the mean over the five times. It compares only between models with the same codec and
        denoiser (kind and prediction target)."""
        batch, base = ctx.generation_batch(prompts, guided=False)
        x0 = self.codec.encode(images)
        per_time = []
        for u in EVAL_GRID:
            t = self.objective.time_at(torch.full((len(x0),), u)).to(x0.device)
            noise = torch.randn(x0.shape[1:], generator=generator).to(x0).expand_as(x0)
            x_t, target = self.corrupt(x0, noise, t)
            pred = self.head(ctx.run_with_images(base, batch, self.embed_noised(x_t, self.objective.level(t))))
            per_time.append(self.objective.row_loss(pred, target))
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
        """Text prompts -> images [B, C, H, W]: the whole sequence is re-run at every denoising step
        (the image span attends bidirectionally, so there is nothing to cache; ``use_cache`` is unused)."""
        n_patch, patch_dim = math.prod(self.grid), self.codec.patch_dim
        batch, base = ctx.generation_batch(prompts, guided=scale != 1.0)

        def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            level = self.objective.level(t).repeat_interleave(n_patch)
            emb = self.embed(x_t.reshape(-1, patch_dim), level).view(*x_t.shape[:2], -1)
            return self.head(ctx.run_with_images(base, batch, emb))

        fn = classifier_free_guidance(model_fn, scale) if scale != 1.0 else model_fn
        noise = torch.randn(len(prompts), n_patch, patch_dim, generator=generator).to(base.device)
        strength = ctx.sample.edit_strength
        start = {} if strength >= 1 else {"init": self.source_start(prompts, noise), "strength": strength}
        keep = None
        if ctx.sample.edit_keep > 0:
            keep = self.kept_cells(ctx, prompts)[..., None], self.source_start(prompts, noise)
            fn = self.keeping(fn, *keep, noise)
        x0 = self.objective.run_sampler(sampler, fn, noise, steps, generator, **start)
        if keep is not None:  # the kept cells end as the source's latent
            x0 = torch.where(keep[0], keep[1], x0)
        if self.residual:  # the sampled differences, on the latents of the images they are aligned with
            x0 = x0 + self.base_latents(batch, len(prompts), x0)
        return self.codec.decode(x0).clamp(-1, 1)

    def source_start(self, prompts: list[str | ImagePrompt], like: torch.Tensor) -> torch.Tensor:
        """What the sampler starts from at ``sample.edit_strength`` < 1: the latents [B, n, P] of the prompts'
        source images (zero for a ``residual`` writer, which samples differences from them). Every prompt must
        be an edit: a text-to-image prompt, or a conversation's, has no source to start from."""
        sources = [as_prompt(p).source for p in prompts]
        missing = sum(s is None for s in sources)
        if missing:
            raise ValueError(
                f"sample.edit_strength < 1 starts each image from its source image, and {missing} of {len(prompts)} "
                "prompts have none (an edit's ImagePrompt with a source); sample them with edit_strength = 1"
            )
        if self.residual:
            return torch.zeros_like(like)
        return self.codec.encode(torch.stack(sources).to(like.device)).to(like.dtype)

    def keeping(self, fn, keep: torch.Tensor, source: torch.Tensor, noise: torch.Tensor):
        """``fn`` seeing, at the ``keep`` cells, the source's latent noised to each call's time with the sampler's
        ``noise`` instead of the sampler's own state there (blended sampling: the edited cells are sampled around
        the kept ones)."""

        def kept(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            noised, _ = self.corrupt(source, noise, t)
            return fn(torch.where(keep, noised, x_t), t)

        return kept

    def base_latents(self, batch, count: int, like: torch.Tensor) -> torch.Tensor:
        """The latents [count, n, P] of the images that the first ``count`` images to fill of ``batch`` (one per
        prompt, the conditional rows) are aligned with; zero where one has none."""
        fill = (batch.image_generate & ~batch.image_given).nonzero()[:count, 0]
        idx = batch.image_base[fill]
        out = torch.zeros_like(like)
        has = idx >= 0
        if has.any():
            out[has] = self.codec.encode(batch.images[idx[has]].to(like.device)).to(like.dtype)
        return out
