"""Continuous masked-autoregressive generation path (``mar``: MAR, Fluid): no vector quantisation.

Images are continuous latent patches (pixels or a VAE's). Inside an image span the transformer
attends bidirectionally; a known patch enters as its projection, an unknown one as a learned
[MASK] vector. In training the patches that come last in the generation order (raster, or random
per image) are masked in a cosine-schedule share, and a small MLP diffusion head
(``DiffusionHead``), conditioned on the transformer's output ``z`` at each masked position, learns
that patch's distribution with the diffusion loss (``objective.denoise_batch`` noise draws per
patch). Sampling produces the image in ``sample.steps`` groups along the order: one transformer
pass per group, then the head's few-step sampler (``sample.head_steps``, temperature
``sample.image_temperature``) for every position of the group, with classifier-free guidance on
the head's output. Images that are read (captioning, VQA) enter with every patch known.
"""

from dataclasses import dataclass

import torch
from torch import nn

from unimm.config import Config
from unimm.models.diffusion_head import DiffusionHead
from unimm.models.latent_writer import build_image_codec
from unimm.models.writer import Writer
from unimm.objectives.image_diffusion import build_denoiser
from unimm.samplers.mar import generation_order, group_sizes, training_mask


@dataclass
class MARTargets:
    x0: torch.Tensor  # [G, n, P] clean latent patches of the generated images
    masked: torch.Tensor  # [G, n] bool: positions whose patch is predicted (and carries the loss)


class MARWriter(Writer):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        im, dim = cfg.image, cfg.model.dim
        self.codec = build_image_codec(cfg)
        self.grid = self.codec.grid
        self.n = self.grid[0] * self.grid[1]
        self.embed = nn.Linear(self.codec.patch_dim, dim)
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.head = DiffusionHead(self.codec.patch_dim, dim, im.head_dim, im.head_depth)
        self.objective = build_denoiser(cfg.objective)
        self.repeat, self.order = cfg.objective.denoise_batch, im.mar_order
        self.head_steps, self.temperature = cfg.sample.head_steps, cfg.sample.image_temperature

    def embed_patches(self, x0: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """x0 [N, n, P], known [N, n] bool -> input embeddings [N, n, dim] ([MASK] where unknown)."""
        return torch.where(known.unsqueeze(-1), self.embed(x0), self.mask_token.to(x0.dtype))

    def read_inputs(self, backbone, images: torch.Tensor) -> torch.Tensor:
        x0 = self.codec.encode(images)
        return self.embed(x0)

    def train_inputs(self, backbone, images: torch.Tensor, generate: torch.Tensor, generator=None):
        with torch.no_grad():  # the codec is fixed while the transformer trains
            x0 = self.codec.encode(images)
        order = generation_order(x0.shape[0], self.n, self.order, generator).to(x0.device)
        masked = training_mask(order, generator).to(x0.device) & generate[:, None]
        return self.embed_patches(x0, ~masked), MARTargets(x0[generate], masked[generate])

    def loss(self, backbone, hidden: torch.Tensor, gen_pos: torch.Tensor, state: MARTargets):
        """Diffusion loss of the head at every masked position, ``denoise_batch`` noise draws each."""
        z = hidden[gen_pos].view(*state.masked.shape, -1)[state.masked].repeat(self.repeat, 1)
        x0 = state.x0[state.masked].repeat(self.repeat, 1)
        t = self.objective.sample_time(x0.shape[0]).to(x0.device)
        noise = torch.randn_like(x0)
        x_t, target = self.objective.corrupt(x0, noise, t)
        return self.objective.loss(self.head(x_t, self.objective.level(t), z), target)

    def sample_patches(
        self, z: torch.Tensor, z_uncond: torch.Tensor | None, scale: float, sampler: str, generator=None
    ) -> torch.Tensor:
        """Draw one patch per row of z [M, dim] with the head (guided by ``z_uncond`` when given) -> [M, P]."""

        def head_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            level = self.objective.level(t)
            if z_uncond is None:
                return self.head(x_t, level, z)
            cond, uncond = self.head(torch.cat([x_t, x_t]), level.repeat(2), torch.cat([z, z_uncond])).chunk(2)
            return uncond + scale * (cond - uncond)

        noise = torch.randn(z.shape[0], self.codec.patch_dim, generator=generator).to(z.device) * self.temperature
        kw = {"temperature": self.temperature} if sampler == "ddpm" else {}
        return self.objective.run_sampler(sampler, head_fn, noise, self.head_steps, generator, **kw)

    @torch.no_grad()
    def generate(
        self, model, prompts: list[str], scale: float, steps: int, sampler: str, generator=None, use_cache: bool = True
    ) -> torch.Tensor:
        """Text prompts -> images [B, C, H, W] in ``steps`` groups (the span is bidirectional: nothing to cache)."""
        guided = scale != 1.0
        batch, base = model.generation_batch(prompts, guided=guided)
        img = batch.image_id >= 0
        b, dev = len(prompts), base.device
        patches = torch.zeros(b, self.n, self.codec.patch_dim, device=dev)
        known = torch.zeros(b, self.n, dtype=torch.bool, device=dev)
        order = generation_order(b, self.n, self.order, generator).to(dev)
        rows = torch.arange(b, device=dev)[:, None]
        done = 0
        for size in group_sizes(self.n, steps):
            emb = self.embed_patches(patches, known)
            x = base.masked_scatter(img.unsqueeze(-1), emb.repeat(2, 1, 1) if guided else emb)
            hidden, _ = model.backbone(x, batch.positions, batch.modality, batch.attn_mask)
            z = hidden[img].view(-1, self.n, hidden.shape[-1])
            group = order[:, done : done + size]  # [b, size]
            z_cond = z[:b][rows, group].flatten(0, 1)
            z_uncond = z[b:][rows, group].flatten(0, 1) if guided else None
            new = self.sample_patches(z_cond, z_uncond, scale, sampler, generator)
            patches[rows, group] = new.view(b, size, -1).to(patches.dtype)
            known[rows, group] = True
            done += size
        return self.codec.decode(patches).clamp(-1, 1)
