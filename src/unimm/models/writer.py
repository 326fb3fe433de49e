"""The defaults of the writer contract (docs/architecture.md), shared by every generation path.

A writer owns an image ``codec`` that is fitted before the transformer trains and then stays frozen;
by default it adds no token ids to the vocabulary and initialises nothing of the backbone's. Writers
override what they do differently (VQ codes bind vocabulary rows; the connector pre-trains a decoder).
"""

import torch
from torch import nn


class Writer(nn.Module):
    causal = False  # the positions of one generated image see each other
    extra_vocab = 0
    codec: nn.Module

    def bind(self, vocab_offset: int) -> None:
        """No token ids of its own."""

    def init_weights(self, backbone) -> None:
        """Nothing of the backbone's to initialise."""

    def prepare(self, images: torch.Tensor, seed: int = 0, progress: bool = True, captions=None) -> dict:
        """Fit the codec on the training images (captions are for writers that pre-train on them)."""
        return self.codec.prepare(images, seed=seed, progress=progress)

    def fixed_modules(self) -> list[nn.Module]:
        """What stays frozen while the transformer trains."""
        return [self.codec]
