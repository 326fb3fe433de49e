"""Continuous masked-autoregressive generation path (``mar``: MAR, Fluid): no vector quantisation.

Images are continuous latent patches (pixels or a VAE's). Inside an image span the transformer
attends bidirectionally; a known patch enters as its projection, an unknown one as a learned
[MASK] vector. In training the patches that come last in the generation order (raster, or random
per image) are masked in a cosine-schedule share, and a small MLP diffusion head
(``DiffusionHead``), conditioned on the transformer's output ``z`` at each masked position, learns
that patch's distribution with the diffusion loss (``writer.denoise_batch`` noise draws per
patch). Sampling produces the image in ``sample.steps`` groups along the order: one transformer
pass per group, then the head's few-step sampler (``sample.head_steps``, temperature
``sample.image_temperature``) for every position of the group, with classifier-free guidance on
the head's output. Images that are read (captioning, VQA) enter with every patch known.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from unimm.config import Config
from unimm.models.contracts import EVAL_GRID, Writer
from unimm.models.diffusion_head import DiffusionHead, PreparedHead
from unimm.samplers.affine import coefficients, step_noise
from unimm.samplers.guidance import guide
from unimm.samplers.mar import generation_order, group_sizes, order_mask, training_mask
from unimm.samplers.masked import cosine_mask_ratio, masked_count
from unimm.settings import DENOISERS, WRITERS, Settings
from unimm.tasks import ImagePrompt


class MARSettings(Settings):
    """``writer.kind = "mar"``: masked autoregression over continuous patches with a per-patch diffusion head."""

    kind: Literal["mar"] = "mar"
    weight: float = Field(5.0, ge=0, description="lambda in L = w_text * L_text + lambda * L_image")
    order: Literal["raster", "random"] = Field("random", description="order in which patches are generated")
    head_dim: int = Field(256, gt=0, description="width of the per-patch MLP diffusion head")
    head_depth: int = Field(3, gt=0, description="residual AdaLN blocks of the diffusion head")
    denoise_batch: int = Field(4, gt=0, description="noise draws per masked patch (MAR's batch multiplier)")


@dataclass
class MARTargets:
    x0: torch.Tensor  # [G, n, P] clean latent patches of the generated images
    masked: torch.Tensor  # [G, n] bool: positions whose patch is predicted (and carries the loss)


@WRITERS.register(MARSettings)
class MARWriter(Writer):
    denoises = True

    def __init__(self, settings: MARSettings, cfg: Config) -> None:
        super().__init__(settings)
        dim = cfg.model.dim
        self.codec = self.build_codec(cfg)
        self.grid = self.codec.grid
        self.n = math.prod(self.grid)
        self.embed = nn.Linear(self.codec.patch_dim, dim)
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.head = DiffusionHead(self.codec.patch_dim, dim, settings.head_dim, settings.head_depth)
        self.objective = DENOISERS.build(cfg.denoiser)

    def embed_patches(self, x0: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """x0 [N, n, P], known [N, n] bool -> input embeddings [N, n, dim] ([MASK] where unknown)."""
        return torch.where(known.unsqueeze(-1), self.embed(x0), self.mask_token.to(x0.dtype))

    def read_inputs(self, ctx, images: torch.Tensor) -> torch.Tensor:
        return self.embed(self.codec.encode(images))

    def train_inputs(self, ctx, images: torch.Tensor, generate: torch.Tensor, generator=None):
        with torch.no_grad():  # the codec is fixed while the transformer trains
            x0 = self.codec.encode(images)
        order = generation_order(x0.shape[0], self.n, self.settings.order, generator).to(x0.device)
        masked = training_mask(order, generator).to(x0.device) & generate[:, None]
        return self.embed_patches(x0, ~masked), MARTargets(x0[generate], masked[generate])

    def loss(self, ctx, hidden: torch.Tensor, gen_pos: torch.Tensor, state: MARTargets, generator=None):
        """Diffusion loss of the head at every masked position, ``denoise_batch`` noise draws each; time and
        noise come from the step's generator."""
        repeat = self.settings.denoise_batch
        z = hidden[gen_pos].view(*state.masked.shape, -1)[state.masked].repeat(repeat, 1)
        x0 = state.x0[state.masked].repeat(repeat, 1)
        t = self.objective.sample_time(x0.shape[0], generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        return self.objective.loss(*self.head_prediction(z, x0, noise, t))

    def head_prediction(
        self, z: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's prediction for patches x0 [M, P] noised with noise [M, P] to times t [M], given z [M, dim],
        and its regression target."""
        x_t, target = self.objective.corrupt(x0, noise, t)
        return self.head(x_t, self.objective.level(t), z), target

    @torch.no_grad()
    def eval_loss(self, ctx, images: torch.Tensor, prompts: list[str], generator=None) -> torch.Tensor:
        """The diffusion-head loss of each image given its prompt (squared error of the denoiser's target per
        latent element of the codec): one generation order from ``generator`` (raster, or one random permutation
        shared by the images); for each mask ratio gamma(u), u in ``EVAL_GRID`` (0.99 ... 0.16 of the patches,
        as training's cosine schedule draws them), the patches last in that order masked and one transformer
        pass; then at each head time ``time_at(u)``, u in ``EVAL_GRID``, one noise draw per patch from
        ``generator``, shared by the images. The mean over the masked patches, the five times and the five
        ratios. It compares only between models with the same codec and denoiser."""
        batch, base = ctx.generation_batch(prompts, guided=False)
        x0 = self.codec.encode(images)
        dev, (b, n) = x0.device, x0.shape[:2]
        order = generation_order(1, n, self.settings.order, generator)
        counts = masked_count(cosine_mask_ratio(torch.tensor(EVAL_GRID)), n).long()
        per_ratio = []
        for mask in order_mask(order.expand(len(counts), n), counts).to(dev):
            z = ctx.run_with_images(base, batch, self.embed_patches(x0, ~mask.expand(b, n)))[:, mask]
            per_time = []
            for u in EVAL_GRID:
                noise = torch.randn(z.shape[1], x0.shape[2], generator=generator).to(x0).expand(b, -1, -1)
                t = self.objective.time_at(torch.full((b * z.shape[1],), u)).to(dev)
                pred, target = self.head_prediction(z.flatten(0, 1), x0[:, mask].flatten(0, 1), noise.flatten(0, 1), t)
                per_time.append(self.objective.row_loss(pred, target).view(b, -1).mean(1))
            per_ratio.append(torch.stack(per_time).mean(0))
        return torch.stack(per_ratio).mean(0)

    def sample_patches(
        self,
        z: torch.Tensor,
        z_uncond: torch.Tensor | None,
        scale: float,
        sampler: str,
        head_steps: int,
        temperature: float,
        generator=None,
        prepared: PreparedHead | None = None,
    ) -> torch.Tensor:
        """Draw one patch per row of z [M, dim] with the head (guided by ``z_uncond`` when given) -> [M, P].
        The head's AdaLN modulations for every time the sampler visits are computed up front
        (``DiffusionHead.conditioned``), so each step runs only the head's MLPs; where the sampler's steps are
        affine and the group is small, the whole loop runs as one C call (``models/head_loop.py``). ``prepared``:
        the head laid out for the sampler's levels (``self.prepared_head``), to share between calls."""
        guided = z_uncond is not None
        kw = {"temperature": temperature} if sampler == "ddpm" else {}
        times = self.objective.sampler_times(sampler, head_steps).to(z.device)
        prepared = prepared or self.prepared_head(sampler, head_steps, z.device)
        head = prepared.condition(torch.cat([z, z_uncond]) if guided else z)
        noise = torch.randn(z.shape[0], self.codec.patch_dim, generator=generator).to(z.device) * temperature
        plan = self.objective.affine_steps(sampler, head_steps, **kw)
        if plan is not None and head.loops:  # the whole loop in one C call, the same noise draws
            at = torch.tensor([s.t for s in plan], dtype=times.dtype, device=times.device)
            draws = step_noise(plan, noise, generator)
            return head.loop(noise, torch.searchsorted(times, at), coefficients(plan), draws, scale if guided else None)

        def head_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            i = torch.searchsorted(times, t[:1])  # this step's time in the table, read on the device
            out = head.run(torch.cat([x_t, x_t]) if guided else x_t, i)
            return guide(out, scale) if guided else out

        return self.objective.run_sampler(sampler, head_fn, noise, head_steps, generator, **kw)

    def prepared_head(self, sampler: str, head_steps: int, device: torch.device) -> PreparedHead:
        """The head laid out for the levels sampler ``sampler`` visits in ``head_steps`` steps."""
        return self.head.prepared(self.objective.level(self.objective.sampler_times(sampler, head_steps).to(device)))

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
        """Text prompts -> images [B, C, H, W] in ``steps`` groups (the span is bidirectional: nothing to cache)."""
        guided, s = scale != 1.0, ctx.sample
        batch, base = ctx.generation_batch(prompts, guided=guided)
        b, dev = len(prompts), base.device
        patches = torch.zeros(b, self.n, self.codec.patch_dim, device=dev)
        known = torch.zeros(b, self.n, dtype=torch.bool, device=dev)
        order = generation_order(b, self.n, self.settings.order, generator).to(dev)
        rows = torch.arange(b, device=dev)[:, None]
        prepared, done = self.prepared_head(sampler, s.head_steps, dev), 0
        for size in group_sizes(self.n, steps):
            emb = self.embed_patches(patches, known)
            z = ctx.run_with_images(base, batch, emb.repeat(2, 1, 1) if guided else emb)
            group = order[:, done : done + size]  # [b, size]
            z_cond = z[:b][rows, group].flatten(0, 1)
            z_uncond = z[b:][rows, group].flatten(0, 1) if guided else None
            new = self.sample_patches(
                z_cond, z_uncond, scale, sampler, s.head_steps, s.image_temperature, generator, prepared
            )
            patches[rows, group] = new.view(b, size, -1).to(patches.dtype)
            known[rows, group] = True
            done += size
        return self.codec.decode(patches).clamp(-1, 1)
