"""Convolutional encoder/decoder stacks shared by the image autoencoders (KL-VAE, VQ-VAE).

Each stride-2 step halves the side, so ``downsample`` must be a power of two.
"""

import math

from torch import nn


def _steps(downsample: int) -> int:
    steps = int(math.log2(downsample))
    if 2**steps != downsample:
        raise ValueError(f"downsample must be a power of two, got {downsample}")
    return steps


def conv_encoder(channels: int, hidden: int, out_channels: int, downsample: int) -> nn.Sequential:
    """[B, channels, H, W] -> [B, out_channels, H/d, W/d]."""
    layers: list[nn.Module] = [nn.Conv2d(channels, hidden, 3, padding=1), nn.SiLU()]
    for _ in range(_steps(downsample)):
        layers += [nn.Conv2d(hidden, hidden, 4, stride=2, padding=1), nn.SiLU()]
    layers += [nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(), nn.Conv2d(hidden, out_channels, 3, padding=1)]
    return nn.Sequential(*layers)


def conv_decoder(in_channels: int, hidden: int, channels: int, downsample: int) -> nn.Sequential:
    """[B, in_channels, H/d, W/d] -> [B, channels, H, W]."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1), nn.SiLU()]
    layers += [nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU()]
    for _ in range(_steps(downsample)):
        layers += [nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1), nn.SiLU()]
    layers += [nn.Conv2d(hidden, channels, 3, padding=1)]
    return nn.Sequential(*layers)
