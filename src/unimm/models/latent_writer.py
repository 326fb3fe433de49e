"""Continuous generation path (transfusion, bagel): latent patches denoised by diffusion or flow.

The codec (raw pixel patches or a small VAE's latent patches) turns images into patch vectors;
``PatchEmbed`` adds each patch's noise-level embedding on the way in, ``PatchHead`` maps hidden
states back to the objective's regression target, and the objective's sampler (DDPM/DDIM/flow)
turns noise into latents at generation time, with classifier-free guidance.
"""

from dataclasses import dataclass

import torch
from torch import nn

from unimm.config import Config
from unimm.models.image_io import PatchEmbed, PatchHead, PixelPatches
from unimm.models.vae import VAEPatches
from unimm.models.writer import Writer
from unimm.objectives import build_image_objective
from unimm.samplers.guidance import classifier_free_guidance


def build_image_codec(cfg: Config) -> nn.Module:
    """The continuous latent named by ``image.latent``: raw pixel patches or a small VAE's latent patches."""
    im, d = cfg.image, cfg.data
    if im.latent == "vae":
        return VAEPatches(
            d.channels, d.image_size, im.patch_size, im.vae_channels, im.vae_downsample, im.vae_hidden,
            im.vae_steps, im.vae_kl,
        )  # fmt: skip
    return PixelPatches(d.channels, d.image_size, im.patch_size)


@dataclass
class LatentTargets:
    target: torch.Tensor  # [G, n, P] regression targets of the generated images


class LatentWriter(Writer):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.codec = build_image_codec(cfg)
        self.grid = self.codec.grid
        self.embed = PatchEmbed(self.codec.patch_dim, cfg.model.dim)
        self.head = PatchHead(cfg.model.dim, self.codec.patch_dim)
        self.objective = build_image_objective(cfg.objective)
        self.max_noise = cfg.objective.understand_max_noise

    def read_inputs(self, backbone, images: torch.Tensor) -> torch.Tensor:
        """Clean images [N, C, H, W] -> input embeddings [N, n, dim] (noise level 0)."""
        x0 = self.codec.encode(images)
        return self.embed(x0.flatten(0, 1), x0.new_zeros(x0.shape[0] * x0.shape[1])).view(*x0.shape[:2], -1)

    def train_inputs(self, backbone, images: torch.Tensor, generate: torch.Tensor, generator=None):
        """Noised inputs for the images to generate; clean (or noise-capped) ones for the images read."""
        with torch.no_grad():  # the codec is fixed while the transformer trains
            x0 = self.codec.encode(images)
        n, dev = x0.shape[0], x0.device
        t = self.objective.sample_time(n, generator).to(dev)
        t_read = self.objective.time_at(torch.rand(n, generator=generator).to(dev) * self.max_noise)
        t = torch.where(generate, t, t_read)
        noise = torch.randn(x0.shape, generator=generator).to(dev)
        x_t, target = self.objective.corrupt(x0.flatten(0, 1), noise.flatten(0, 1), t.repeat_interleave(x0.shape[1]))
        x_t, target = x_t.view_as(x0), target.view_as(x0)
        level = self.objective.level(t)
        if self.max_noise == 0:  # read images exactly clean
            level = torch.where(generate, level, torch.zeros_like(level))
            x_t = torch.where(generate[:, None, None], x_t, x0)
        emb = self.embed(x_t.flatten(0, 1), level.repeat_interleave(x0.shape[1]))
        return emb.view(*x0.shape[:2], -1), LatentTargets(target[generate])

    def loss(self, backbone, hidden: torch.Tensor, gen_pos: torch.Tensor, state: LatentTargets):
        pred = self.head(hidden[gen_pos])
        return self.objective.loss(pred, state.target.flatten(0, 1))

    @torch.no_grad()
    def generate(
        self, model, prompts: list[str], scale: float, steps: int, sampler: str, generator=None, use_cache: bool = True
    ) -> torch.Tensor:
        """Text prompts -> images [B, C, H, W]: the whole sequence is re-run at every denoising step
        (the image span attends bidirectionally, so there is nothing to cache; ``use_cache`` is unused)."""
        n_patch, patch_dim = self.grid[0] * self.grid[1], self.codec.patch_dim
        batch, base = model.generation_batch(prompts, guided=scale != 1.0)
        img = batch.image_id >= 0

        def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            level = self.objective.level(t).repeat_interleave(n_patch)
            emb = self.embed(x_t.reshape(-1, patch_dim), level)
            x = base.masked_scatter(img.unsqueeze(-1), emb)
            hidden, _ = model.backbone(x, batch.positions, batch.modality, batch.attn_mask)
            return self.head(hidden[img]).view(x_t.shape)

        fn = classifier_free_guidance(model_fn, scale) if scale != 1.0 else model_fn
        noise = torch.randn(len(prompts), n_patch, patch_dim, generator=generator).to(base.device)
        x0 = self.objective.run_sampler(sampler, fn, noise, steps, generator)
        return self.codec.decode(x0).clamp(-1, 1)
