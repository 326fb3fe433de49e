"""A small VQ-VAE image tokenizer: conv encoder -> vector quantiser -> conv decoder.

``encode`` turns images into a grid of code indices (the discrete image tokens of the
chameleon / janus / show-o / unidisc strategies); ``decode`` turns indices back into images.
"""

import torch
import torch.nn.functional as F
from torch import nn

from unimm.nn.conv import conv_decoder, conv_encoder
from unimm.tokenizers.quantizer import VectorQuantizer


class VQVAE(nn.Module):
    def __init__(
        self,
        channels: int,
        codebook_size: int = 256,
        code_dim: int = 16,
        hidden: int = 64,
        downsample: int = 4,
        beta: float = 0.25,
        l2_normalize: bool = False,
        ema_decay: float | None = 0.99,
    ) -> None:
        super().__init__()
        self.encoder = conv_encoder(channels, hidden, code_dim, downsample)
        self.quantizer = VectorQuantizer(codebook_size, code_dim, beta, l2_normalize, ema_decay)
        self.decoder = conv_decoder(code_dim, hidden, channels, downsample)

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """images [B, C, H, W] in [-1, 1] -> (reconstruction, loss, metrics); ``generator``: see the quantizer."""
        z_q, _, q = self.quantizer(self.encoder(images), generator)
        recon = self.decoder(z_q)
        mse = F.mse_loss(recon, images)
        loss = mse + q["commit_loss"] + q.get("codebook_loss", 0.0)
        metrics = {"mse": mse.detach(), "psnr": psnr(mse.detach()), "usage": q["usage"], "perplexity": q["perplexity"]}
        return recon, loss, metrics

    def training_loss(self, images: torch.Tensor, generator: torch.Generator | None = None, return_recon: bool = False):
        """The tokenizer-trainer interface shared with ``SmallVAE``: (loss, metrics), plus the
        reconstruction (with gradient) when ``return_recon``."""
        recon, loss, metrics = self(images, generator)
        return (loss, metrics, recon) if return_recon else (loss, metrics)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Round trip through the codes -> (reconstruction, code indices)."""
        idx = self.encode(images)
        return self.decode(idx), idx

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> code indices [B, H/d, W/d] (never updates the codebook)."""
        return self.quantizer.indices(self.encoder(images))

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """code indices [B, h, w] -> images [B, C, H, W]."""
        return self.decoder(self.quantizer.embed(indices).permute(0, 3, 1, 2))


def psnr(mse: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for images in [-1, 1] (range 2)."""
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-12))
