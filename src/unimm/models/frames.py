"""Clips through image codecs, one frame at a time: an image is a clip without a time axis.

Media tensors are images ``[N, C, H, W]`` or clips ``[N, T, C, H, W]`` (``data.frames = T``; None for images,
``data/clips.py``).
``FramewiseCodec`` gives an image codec (pixels, VAE, VQ) the clip interface: it encodes every frame with the
codec's own ``encode_frame`` and lays the frames' tokens out in raster-in-time order (frame by frame, each frame
row by row: the order of ``sequence.span_cells``), and decodes them back. For an image the frame axis is empty
and every rearrangement below is the identity, so images take the same path with the same numbers.

Per-frame codecs rather than a 3-D (causal) VAE: the clips here are a few frames of 32 x 32 digits moving a few
pixels per frame, so a frame codec already compresses what there is to compress per frame, while temporal
compression would merge frames that differ only by a shift of a few pixels (exactly the motion the model must
get right) and would cost a second codec to fit per run. Motion is left to the transformer, which sees every
frame's tokens with their time positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from einops import rearrange

from unimm.data.clips import frames_of, time_shape

if TYPE_CHECKING:
    from unimm.models.encode_cache import EncodeCache


class FramewiseCodec:
    """A mixin for image codecs: ``encode`` / ``decode`` over images or clips, ``grid`` (T, h, w).

    A codec defines ``encode_frame`` (frames [M, C, H, W] -> [M, h*w, ...]), ``decode_frame`` (the inverse) and
    ``frame_grid`` (h, w); ``frames`` (set from ``data.frames`` when the writer builds it) says whether what it
    codes are images (None) or clips of that many frames.
    """

    frames: int | None = None
    frame_grid: tuple[int, int]
    encode_cache: EncodeCache | None = None  # set by training on a frozen codec (``train.encode_cache``)

    @property
    def grid(self) -> tuple[int, int, int]:
        """The token layout of one image or clip: (frames, rows, cols), frames 1 for an image."""
        return (self.frames or 1, *self.frame_grid)

    def encode(self, media: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] or clips [N, T, C, H, W] -> [N, T*h*w, ...] in raster-in-time order (through
        ``encode_cache`` when one is set)."""
        if self.encode_cache is not None:
            return self.encode_cache.encode(media, self._encode)
        return self._encode(media)

    def _encode(self, media: torch.Tensor) -> torch.Tensor:
        out = self.encode_frame(frames_of(media))
        return rearrange(out, "(n t) k ... -> n (t k) ...", n=media.shape[0])

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, T*h*w, ...] -> images [N, C, H, W] or clips [N, T, C, H, W]."""
        frames = self.decode_frame(rearrange(tokens, "n (t k) ... -> (n t) k ...", t=self.grid[0]))
        return frames.view(tokens.shape[0], *time_shape(self.frames), *frames.shape[1:])
