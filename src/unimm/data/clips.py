"""Media tensors: images ``[N, C, H, W]``, or clips ``[N, T, C, H, W]`` (a video dataset's, ``data.frames = T``).

An image is a clip without a time axis. These helpers see the frames of either, so a function of frames
(a codec, a resize, image statistics) serves both, and for images they are the identity.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange


def frames_of(media: torch.Tensor) -> torch.Tensor:
    """Images [N, C, H, W] or clips [N, T, C, H, W] -> their frames [N or N*T, C, H, W]."""
    return rearrange(media, "n ... c h w -> (n ...) c h w")


def frame_count(media: torch.Tensor) -> int:
    """Frames per item of images [N, C, H, W] (1) or clips [N, T, C, H, W] (T)."""
    return math.prod(media.shape[1:-3])


def time_shape(frames: int | None) -> tuple[int, ...]:
    """The time axis of a media tensor: () for images (``frames`` None), (T,) for clips."""
    return () if frames is None else (frames,)


def media_frames(media: torch.Tensor) -> int | None:
    """``data.frames`` of a media tensor: None for images [N, C, H, W], T for clips [N, T, C, H, W]."""
    return int(media.shape[1]) if media.ndim == 5 else None


def like_media(frames: torch.Tensor, media: torch.Tensor) -> torch.Tensor:
    """Frames [N or N*T, C', H', W'] (of ``media``, after a per-frame function) -> ``media``'s layout."""
    return frames.view(*media.shape[:-3], *frames.shape[1:])


def per_frame_labels(labels: torch.Tensor, media: torch.Tensor) -> torch.Tensor:
    """A label per item [N] -> a label per frame of ``media`` [N * T] (each frame keeps its clip's)."""
    return labels.repeat_interleave(frame_count(media))
