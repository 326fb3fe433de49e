"""The discrete image codec of the VQ strategies: images <-> grids of VQ-VAE code indices.

Fitted on the run's own images before the transformer trains (``prepare``), or loaded from a
``unimm tokenizer train`` output named by ``codec.tokenizer``; frozen afterwards. Its weights are
saved inside the model, so a trained run never needs the tokenizer directory again.
"""

from typing import Literal

import torch
from einops import rearrange
from pydantic import Field
from torch import nn

from unimm.flops import FitFlops
from unimm.models.frames import FramewiseCodec
from unimm.settings import CODECS, Settings
from unimm.tokenizers.fit import fit_image_tokenizer, load_tokenizer_into
from unimm.tokenizers.vqvae import VQVAE, psnr


class VQSettings(Settings):
    """``codec.kind = "vq"``: a VQ-VAE fitted in-run, or a trained one loaded from ``tokenizer``."""

    kind: Literal["vq"] = "vq"
    codebook: int = Field(256, gt=1, description="codes of the tokenizer")
    dim: int = Field(16, gt=0, description="code vector size")
    hidden: int = Field(64, gt=0)
    downsample: int = Field(4, gt=0)
    steps: int = Field(2000, gt=0, description="fitting steps before the transformer trains")
    l2_normalize: bool = False
    tokenizer: str | None = Field(
        None, description="directory of a 'unimm tokenizer train' output to use (frozen) instead of fitting one"
    )


@CODECS.register(VQSettings)
class VQCodes(FramewiseCodec, nn.Module):
    """Images <-> grids of code indices (clips: per frame, ``FramewiseCodec``)."""

    @classmethod
    def from_settings(cls, s: VQSettings, channels: int, image_size: int) -> "VQCodes":
        return cls(
            channels,
            image_size,
            codebook=s.codebook,
            code_dim=s.dim,
            hidden=s.hidden,
            downsample=s.downsample,
            fit_steps=s.steps,
            l2_normalize=s.l2_normalize,
            pretrained=s.tokenizer,
        )

    def __init__(
        self,
        channels: int,
        image_size: int,
        codebook: int = 256,
        code_dim: int = 16,
        hidden: int = 64,
        downsample: int = 4,
        fit_steps: int = 2000,
        l2_normalize: bool = False,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        if image_size % downsample:
            raise ValueError(f"image size {image_size} is not divisible by codec.downsample {downsample}")
        self.vq = VQVAE(channels, codebook, code_dim, hidden, downsample, l2_normalize=l2_normalize)
        self.num_codes, self.fit_steps, self.pretrained = codebook, fit_steps, pretrained
        side = image_size // downsample
        self.frame_grid = (side, side)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def encode_frame(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] in [-1, 1] -> codes [B, h*w] (raster order)."""
        return rearrange(self.vq.encode(images), "b h w -> b (h w)")

    def code_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [...] -> their codebook vectors [..., code_dim]."""
        return self.vq.quantizer.embed(codes)

    @torch.no_grad()
    def decode_frame(self, codes: torch.Tensor) -> torch.Tensor:
        h, w = self.frame_grid
        return self.vq.decode(rearrange(codes, "b (h w) -> b h w", h=h, w=w))

    def preparation(self) -> list[tuple[str, int, str]]:
        """What ``prepare`` runs: (what, steps, the config key of the steps); loading a trained one costs none."""
        return [] if self.pretrained else [("fitting the VQ codec", self.fit_steps, "codec.steps")]

    def prepare(self, images: torch.Tensor, seed: int = 0, batch_size: int = 64, progress: bool = True) -> dict:
        """Fit (or load) the tokenizer, freeze it, report its reconstruction on ``images`` [:1000]. A fit's FLOPs
        go to ``flops.codec.steps``; a loaded one's (from its ``ledger.json``; None when it has none) to
        ``shared_flops.codec.tokenizer``: it was trained once, outside the run. The reconstruction probe
        measures, it builds nothing, and is not counted."""
        if self.pretrained:
            spent = {"shared_flops.codec.tokenizer": load_tokenizer_into(self.vq, self.pretrained)}
        else:
            fit = FitFlops()
            fit_image_tokenizer(
                self.vq, images, self.fit_steps, batch_size, seed=seed, progress=progress, desc="fit VQ", flops=fit
            )
            spent = {"flops.codec.steps": fit.flops}
        self.vq.eval().requires_grad_(False)
        self.fitted.fill_(True)
        probe = images[:1000]
        codes = self.encode_frame(probe)
        mse = float((self.decode_frame(codes) - probe).pow(2).mean())
        usage = torch.bincount(codes.flatten(), minlength=self.num_codes).gt(0).float().mean()
        return {"vq_recon_mse": mse, "vq_psnr": float(psnr(torch.tensor(mse))), "vq_usage": float(usage), **spent}
