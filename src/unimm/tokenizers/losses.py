"""Optional extra losses for the image tokenizers: a PatchGAN discriminator and a perceptual loss.

Both are off by default (they cost CPU time) and are owned by the fitting loop, never by the
tokenizer, so they never enter a saved ``tokenizer.safetensors``.

- adversarial: a small patch discriminator trained with the hinge loss (as in SAGAN / VQGAN); the
  tokenizer's decoder gets ``-D(recon)`` as an extra term.
- perceptual: an LPIPS-style distance between channel-normalised feature maps of a frozen conv
  stack. No pretrained weights are allowed here, so the stack is *randomly* initialised from a seed:
  random conv features are a known cheap proxy for learned ones (they still compare local structure
  at several scales rather than single pixels), not a replacement for VGG-based LPIPS.
"""

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """Strided convs + LeakyReLU -> a map of real/fake logits, one per (overlapping) image patch.

    [B, channels, H, W] -> [B, 1, H / 2**layers, W / 2**layers].
    """

    def __init__(self, channels: int, hidden: int = 32, layers: int = 2) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        c_in = channels
        for i in range(layers):
            c_out = hidden * 2**i
            blocks.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))
            if i > 0:  # no norm on the first layer (as in PatchGAN)
                blocks.append(nn.GroupNorm(1, c_out))
            blocks.append(nn.LeakyReLU(0.2))
            c_in = c_out
        blocks.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: 0.5 * (E[relu(1 - D(real))] + E[relu(1 + D(fake))])."""
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: -E[D(fake)]."""
    return -fake_logits.mean()


def random_conv_features(channels: int, seed: int = 0, hidden: int = 16, stages: int = 3) -> nn.Sequential:
    """A frozen conv stack with fixed random (seeded, He-normal) weights: a cheap in-project feature net.

    Returns an ``nn.Sequential`` of conv + ReLU stages (every stage after the first halves the side);
    ``PerceptualLoss`` compares the output of every stage.
    """
    gen = torch.Generator().manual_seed(seed)
    layers, c_in = [], channels
    for i in range(stages):
        c_out = hidden * 2**i
        conv = nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2 / (c_in * 9)) ** 0.5)
            conv.bias.zero_()
        layers.append(nn.Sequential(conv, nn.ReLU()))
        c_in = c_out
    return nn.Sequential(*layers).eval().requires_grad_(False)


class PerceptualLoss(nn.Module):
    """LPIPS-style: mean over stages of the squared L2 distance between unit-normalised feature vectors.

    Equal stage weights, no learned heads. ``feature_net`` is an ``nn.Sequential`` of stages; it is frozen.
    """

    def __init__(self, feature_net: nn.Sequential) -> None:
        super().__init__()
        self.features = feature_net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.features.eval()  # the feature net stays fixed
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y [B, C, H, W] -> scalar distance (0 when x == y)."""
        loss = x.new_zeros(())
        for stage in self.features:
            x, y = stage(x), stage(y)
            d = (_unit(x) - _unit(y)).pow(2).sum(dim=1)  # [B, h, w]
            loss = loss + d.mean()
        return loss / len(self.features)


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Normalise each spatial position's feature vector to unit length (over channels)."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
