"""A small convolutional KL-VAE and the latent-patch codec built on it.

``VAEPatches`` is the optional continuous latent of the transfusion layout: images are encoded
by a VAE (trained on the run's own images before the transformer, then frozen), the latent map is
scaled to unit variance and cut into patches. It has the same interface as ``PixelPatches``.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field
from torch import nn

from unimm.flops import FitFlops, count_flops
from unimm.models.frames import FramewiseCodec
from unimm.nn.conv import conv_decoder, conv_encoder
from unimm.settings import CODECS, Settings
from unimm.tokenizers.fit import fit_image_tokenizer, load_tokenizer_into


class SmallVAE(nn.Module):
    """Conv encoder/decoder; each downsampling step halves the side. Latent: [B, z, H/d, W/d]."""

    def __init__(
        self,
        channels: int,
        latent_channels: int = 4,
        hidden: int = 64,
        downsample: int = 2,
        kl_weight: float = 1e-4,
        decoder_noise: float = 0.0,
    ) -> None:
        super().__init__()
        self.kl_weight, self.decoder_noise = kl_weight, decoder_noise
        self.encoder = conv_encoder(channels, hidden, 2 * latent_channels, downsample)
        self.decoder = conv_decoder(latent_channels, hidden, channels, downsample)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, C, H, W] in [-1, 1] -> (mean, logvar), each [B, z, H/d, W/d]."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30, 20)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def loss(self, x: torch.Tensor, kl_weight: float, generator: torch.Generator | None = None):
        """Reconstruction MSE + kl_weight * KL(q(z|x) || N(0, I)) per latent element."""
        loss, mse, kl, _ = self._loss(x, kl_weight, generator)
        return loss, mse, kl

    def _loss(self, x: torch.Tensor, kl_weight: float, generator: torch.Generator | None = None):
        """(loss, mse, kl, reconstruction); the reconstruction keeps its gradient. In training with
        ``decoder_noise`` the decoder sees each latent sample plus noise of s times the batch's latent std, s ~ U(0,
        decoder_noise) per image (a generator's latents are off by about that much; the target stays the clean
        image)."""
        mean, logvar = self.encode(x)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator)
        if self.training and self.decoder_noise > 0:
            s = torch.rand(len(z), 1, 1, 1, generator=generator).to(z) * self.decoder_noise * mean.detach().std()
            z = z + s * torch.randn(z.shape, generator=generator).to(z)
        x_hat = self.decode(z)
        mse = F.mse_loss(x_hat, x)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        return mse + kl_weight * kl, mse.detach(), kl.detach(), x_hat

    def training_loss(self, x: torch.Tensor, generator: torch.Generator | None = None, return_recon: bool = False):
        """The tokenizer-trainer interface shared with ``VQVAE``: (loss, metrics), plus the
        reconstruction (with gradient) when ``return_recon``."""
        loss, mse, kl, x_hat = self._loss(x, self.kl_weight, generator)
        metrics = {"mse": mse, "kl": kl}
        return (loss, metrics, x_hat) if return_recon else (loss, metrics)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Deterministic round trip through the posterior mean; no discrete codes (None)."""
        return self.decode(self.encode(x)[0]), None


class VAESettings(Settings):
    """``codec.kind = "vae"``: a small KL-VAE fitted on the run's images before the transformer trains."""

    kind: Literal["vae"] = "vae"
    patch_size: int = Field(1, gt=0, description="patch side in latent cells")
    channels: int = Field(4, gt=0, description="latent channels")
    downsample: int = Field(4, gt=0, description="spatial downsampling (a power of 2)")
    hidden: int = Field(32, gt=0)
    steps: int = Field(600, gt=0, description="VAE fitting steps before the transformer trains")
    kl: float = Field(1e-4, ge=0, description="KL weight")
    tokenizer: str | None = Field(
        None, description="directory of a 'unimm tokenizer train' KL-VAE to use (frozen) instead of fitting one"
    )


@CODECS.register(VAESettings)
class VAEPatches(FramewiseCodec, nn.Module):
    """Images [B, C, H, W] <-> patches of the scaled VAE latent [B, (H/dp)(W/dp), z p p] (clips: per frame)."""

    @classmethod
    def from_settings(cls, s: VAESettings, channels: int, image_size: int) -> "VAEPatches":
        return cls(
            channels,
            image_size,
            s.patch_size,
            latent_channels=s.channels,
            downsample=s.downsample,
            hidden=s.hidden,
            fit_steps=s.steps,
            kl_weight=s.kl,
            pretrained=s.tokenizer,
        )

    def __init__(
        self,
        channels: int,
        image_size: int,
        patch_size: int,
        latent_channels: int = 4,
        downsample: int = 2,
        hidden: int = 64,
        fit_steps: int = 1500,
        kl_weight: float = 1e-4,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        side = image_size // downsample
        if image_size % downsample or side % patch_size:
            raise ValueError(
                f"image size {image_size} / codec.downsample {downsample} "
                f"is not divisible by codec.patch_size {patch_size}"
            )
        self.vae = SmallVAE(channels, latent_channels, hidden, downsample, kl_weight)
        self.patch_size, self.fit_steps, self.kl_weight = patch_size, fit_steps, kl_weight
        self.pretrained = pretrained
        self.frame_grid = (side // patch_size, side // patch_size)
        self.patch_dim = latent_channels * patch_size * patch_size
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def encode_frame(self, images: torch.Tensor) -> torch.Tensor:
        z = self.vae.encode(images)[0] * self.scale
        p = self.patch_size
        return rearrange(z, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=p, p2=p)

    def decode_frame(self, patches: torch.Tensor) -> torch.Tensor:
        p, (h, w) = self.patch_size, self.frame_grid
        z = rearrange(patches, "b (h w) (c p1 p2) -> b c (h p1) (w p2)", h=h, w=w, p1=p, p2=p)
        return self.vae.decode(z / self.scale)

    def preparation(self) -> list[tuple[str, int, str]]:
        """What ``prepare`` runs: (what, steps, the config key of the steps); loading a trained one costs none."""
        return [] if self.pretrained else [("fitting the VAE codec", self.fit_steps, "codec.steps")]

    def prepare(self, images: torch.Tensor, seed: int = 0, batch_size: int = 64, progress: bool = True) -> dict:
        """Train the VAE on ``images`` [N, C, H, W] (frames, for clips), set the latent scale to 1/std, then freeze
        it. The FLOPs go to ``flops.codec.steps`` (the fit) and ``flops.codec.scale_pass`` (encoding every
        image once). With ``codec.tokenizer`` the VAE is loaded instead of fitted: its FLOPs (from its
        ``ledger.json``) go to ``shared_flops.codec.tokenizer``, as a loaded VQ's do, and only the scale pass runs."""
        if self.pretrained:
            spent = {"shared_flops.codec.tokenizer": load_tokenizer_into(self.vae, self.pretrained)}
            self.vae.eval()
            with torch.no_grad():
                probe = images[:1000]
                m = {"mse": float((self.vae.decode(self.vae.encode(probe)[0]) - probe).pow(2).mean()), "kl": None}
        else:
            fit = FitFlops()
            m = fit_image_tokenizer(
                self.vae, images, self.fit_steps, batch_size, seed=seed, progress=progress, desc="fit VAE", flops=fit
            )
            spent = {"flops.codec.steps": fit.flops}
        with torch.no_grad(), count_flops() as scale_pass:
            self.scale.fill_(1.0)
            latents = torch.cat([self.vae.encode(images[i : i + 256])[0] for i in range(0, len(images), 256)])
            self.scale.fill_(1.0 / latents.std().item())
            self.fitted.fill_(True)
        self.vae.requires_grad_(False)
        return {
            "vae_recon_mse": m["mse"],
            "vae_kl": m["kl"],
            "vae_scale": float(self.scale),
            **spent,
            "flops.codec.scale_pass": scale_pass.get_total_flops(),
        }
