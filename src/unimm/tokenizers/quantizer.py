"""Vector quantiser for discrete image tokenizers (VQ-VAE / VQGAN style).

Nearest-code assignment with a straight-through gradient, commitment loss, and the usual
codebook-usage safeguards: optional l2-normalised codes (cosine-similarity lookup, as in ViT-VQGAN),
EMA codebook updates (van den Oord et al. 2017, appendix), and restart of dead codes from
encoder outputs of the current batch. Reports codebook usage and perplexity.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        num_codes: int,
        dim: int,
        beta: float = 0.25,
        l2_normalize: bool = False,
        ema_decay: float | None = 0.99,
        dead_threshold: float = 1e-3,
        eps: float = 1e-5,
    ) -> None:
        """``ema_decay=None`` learns the codebook by gradient (codebook loss) instead of EMA;
        a code whose EMA usage falls below ``dead_threshold`` (in tokens per step) is restarted."""
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.l2_normalize, self.ema_decay = l2_normalize, ema_decay
        self.dead_threshold, self.eps = dead_threshold, eps
        codes = torch.randn(num_codes, dim)
        if ema_decay is None:
            self.codebook = nn.Parameter(codes)
        else:
            self.register_buffer("codebook", codes)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", codes.clone())

    def codes(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=-1) if self.l2_normalize else self.codebook

    def lookup(self, flat: torch.Tensor) -> torch.Tensor:
        """flat: [N, dim] -> nearest code index [N] (squared distance, or cosine when normalised)."""
        codes = self.codes()
        if self.l2_normalize:
            return (F.normalize(flat, dim=-1) @ codes.T).argmax(-1)
        dist = flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ codes.T + codes.pow(2).sum(-1)
        return dist.argmin(-1)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """z: [B, dim, H, W] -> code indices [B, H, W], without touching the codebook."""
        b, _, h, w = z.shape
        flat = rearrange(z, "b d h w -> (b h w) d").float()
        return self.lookup(F.normalize(flat, dim=-1) if self.l2_normalize else flat).view(b, h, w)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [...] -> code vectors [..., dim]."""
        return F.embedding(indices, self.codes())

    def forward(
        self, z: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """z: [B, dim, H, W] -> (z_q with a straight-through gradient, indices [B, H, W], losses + stats).
        ``generator`` draws the encoder outputs that restart dead codes (EMA codebook, training)."""
        b, _, h, w = z.shape
        flat = rearrange(z, "b d h w -> (b h w) d").float()
        if self.l2_normalize:
            flat = F.normalize(flat, dim=-1)
        idx = self.lookup(flat)
        if self.training and self.ema_decay is not None:
            self._ema_update(flat.detach(), idx, generator)
        q = self.embed(idx)
        commit = F.mse_loss(flat, q.detach())
        out = {"commit_loss": self.beta * commit}
        if self.ema_decay is None:
            out["codebook_loss"] = F.mse_loss(q, flat.detach())
        q = flat + (q - flat).detach()  # straight-through: the decoder's gradient reaches the encoder
        counts = torch.bincount(idx, minlength=self.num_codes).float()
        probs = counts / counts.sum()
        out["perplexity"] = torch.exp(-(probs * (probs + 1e-10).log()).sum()).detach()
        out["usage"] = (counts > 0).float().mean().detach()
        z_q = rearrange(q, "(b h w) d -> b d h w", b=b, h=h, w=w).to(z.dtype)
        return z_q, idx.view(b, h, w), out

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor, generator: torch.Generator | None = None) -> None:
        onehot_counts = torch.bincount(idx, minlength=self.num_codes).float()
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat)
        self.ema_count.mul_(self.ema_decay).add_(onehot_counts, alpha=1 - self.ema_decay)
        self.ema_sum.mul_(self.ema_decay).add_(sums, alpha=1 - self.ema_decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n  # Laplace smoothing
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(-1))
        dead = self.ema_count < self.dead_threshold
        if dead.any():  # restart dead codes at random encoder outputs of this batch
            pick = torch.randint(0, flat.shape[0], (int(dead.sum()),), generator=generator).to(flat.device)
            self.codebook[dead] = flat[pick]
            self.ema_sum[dead] = flat[pick]
            self.ema_count[dead] = 1.0
