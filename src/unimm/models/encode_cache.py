"""What a frozen codec made of each training image, kept so that it is encoded once (``train.encode_cache``).

After ``prepare`` the writer's codec never changes, so an image's tokens are a function of its pixels. Without
augmentation an edit run draws each of its ~30k distinct images about 17 times over 4,000 steps; the FLOP ledger
already charges the encoder once per distinct input (``train/frozen.py``), and this makes the wall time follow
(the editing recipe's training: 1.04x the throughput, ``bench/results/encode_cache.md``). Augmented copies
(``data.shift`` on images read for captions) are new items, encoded each time.

Each item (an image ``[C, H, W]`` or a clip ``[T, C, H, W]``) is looked up by a digest of its bytes. A miss is
encoded **alone**, a batch of one: an item's tokens then do not depend on which other items shared its batch, so a
run resumed with an empty cache recomputes the very values the uninterrupted run had cached, and training stays
exactly resumable. (They can differ in the last bits from the same item encoded inside a larger batch, which is
why the cache is a setting: a run is reproducible with its own setting.) Once ``max_bytes`` are held, further misses
are encoded without being kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _digest(item: torch.Tensor) -> bytes:
    return hashlib.blake2b(item.contiguous().numpy().tobytes(), digest_size=16).digest()


class EncodeCache:
    """Encoded items by their pixels' digest, filled as they are first met; CPU tensors only."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.items: dict[bytes, torch.Tensor] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def encode(self, media: torch.Tensor, encode_one: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``media`` [N, ...] -> the codec's output [N, ...], each item from the cache or ``encode_one`` (called on
        a batch of one, ``media[i : i + 1]``)."""
        if media.device.type != "cpu" or media.requires_grad:
            raise ValueError("the encode cache holds CPU inputs without gradients (a frozen codec's training inputs)")
        out = []
        for item in media:
            key = _digest(item)
            hit = self.items.get(key)
            if hit is None:
                self.misses += 1
                hit = encode_one(item[None])[0]
                size = hit.numel() * hit.element_size()
                if self.bytes + size <= self.max_bytes:
                    self.items[key] = hit
                    self.bytes += size
            else:
                self.hits += 1
            out.append(hit)
        return torch.stack(out)

    def summary(self) -> str:
        seen = self.hits + self.misses
        share = self.hits / seen if seen else 0.0
        return (
            f"encode cache: {len(self.items):,} items kept ({self.bytes / 2**20:.0f} MiB), "
            f"{share:.1%} of {seen:,} encodes reused"
        )


@contextmanager
def cached_encodes(codec: nn.Module, max_bytes: int) -> Iterator[EncodeCache | None]:
    """Route ``codec.encode`` through a new ``EncodeCache`` of ``max_bytes`` inside (nothing when 0, or when the
    codec has no weights: patchifying pixels costs less than a digest)."""
    if not max_bytes or not any(True for _ in codec.parameters()):
        yield None
        return
    codec.encode_cache = cache = EncodeCache(max_bytes)
    try:
        yield cache
    finally:
        codec.encode_cache = None
