"""A small CLIP-style image-text model: conv image encoder, word-level transformer text encoder, shared space."""

from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from unimm.data import convert_channels, resize
from unimm.eval.classifier import ImageClassifier
from unimm.eval.words import words

PAD, UNK = "<pad>", "<unk>"


class WordVocab:
    """Word-level vocabulary (``words`` normalisation); id 0 pads, id 1 stands for unknown words."""

    def __init__(self, tokens: list[str], max_len: int) -> None:
        if tokens[:2] != [PAD, UNK]:
            raise ValueError(f"vocabulary must start with {PAD!r}, {UNK!r}")
        self.tokens, self.max_len = tokens, max_len
        self.ids = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, texts: list[str], max_len: int = 24) -> WordVocab:
        """Every word of ``texts`` (most frequent first); ``max_len`` is capped at the longest text."""
        counts = Counter(w for t in texts for w in words(t))
        longest = max((len(words(t)) for t in texts), default=1)
        return cls([PAD, UNK, *sorted(counts, key=lambda w: (-counts[w], w))], max(1, min(max_len, longest)))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Token ids ``[B, max_len]``, right-padded with 0; a text with no words becomes one unknown token."""
        out = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.ids.get(w, 1) for w in words(text)][: self.max_len] or [1]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


class TextEncoder(nn.Module):
    """Token ids ``[B, L]`` -> ``[B, dim]``: embeddings + positions, pre-norm transformer layers, masked mean."""

    def __init__(
        self, vocab_size: int, max_len: int, dim: int, width: int = 64, depth: int = 1, heads: int = 4
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.randn(max_len, width) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pad = tokens == 0
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return self.proj(self.norm((x * keep).sum(1) / keep.sum(1).clamp(min=1)))


class ClipModel(nn.Module):
    """Images and texts embedded in one unit-norm space of size ``dim``; ``logit_scale`` is the learnable
    inverse temperature (log-parametrised, started at 1/0.07 as in CLIP).

    The image encoder is the judge classifier's conv stack with its head projecting to ``dim``.
    """

    def __init__(
        self,
        vocab: WordVocab,
        channels: int,
        image_size: int,
        dim: int = 64,
        width: int = 64,
        depth: int = 1,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.vocab = vocab
        self.config = dict(channels=channels, image_size=image_size, dim=dim, width=width, depth=depth, heads=heads)
        self.image_encoder = ImageClassifier(channels, image_size, num_classes=dim)
        self.text_encoder = TextEncoder(len(vocab), vocab.max_len, dim, width, depth, heads)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images ``[B, C, H, W]`` (any size and channel count) -> unit vectors ``[B, dim]``."""
        x = resize(convert_channels(images.float(), self.config["channels"]), self.config["image_size"])
        return F.normalize(self.image_encoder(x), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Texts -> unit vectors ``[B, dim]``."""
        return F.normalize(self.text_encoder(self.vocab.encode(texts)), dim=-1)

    def forward(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Similarity logits ``[B_images, B_texts]``, scaled by the temperature (capped at 100)."""
        scale = self.logit_scale.clamp(max=math.log(100)).exp()
        return scale * self.encode_images(images) @ self.encode_texts(texts).T
