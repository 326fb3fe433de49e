"""Pixel statistics of a run's training images, kept in ``image_stats.json`` to judge the inputs it is given.

An image is *unusual* when its mean intensity or the mean of its border pixels lies far from the training
images' (more than ``SIGMAS`` standard deviations and more than a floor): an inverted digit, a [0, 1]
image, a photo given to an MNIST model. Values are in [-1, 1], as the model reads them. For clips the
statistics are the frames' (a clip is unusual when one of its frames is).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from unimm.checkpoint import atomic_write_text
from unimm.data.clips import frame_count, frames_of

STATS_FILE = "image_stats.json"
SIGMAS = 6.0
MEAN_FLOOR = 0.25  # at least this far from the training mean intensity
BORDER_FLOOR = 0.5  # at least this far from the training border intensity


def _border(images: torch.Tensor) -> torch.Tensor:
    """The outermost pixels of ``[N,C,H,W]`` images -> ``[N,C,2(H+W)]`` (corners twice)."""
    return torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], dim=-1)


@dataclass(frozen=True)
class ImageStats:
    """``mean`` / ``mean_std``: mean and spread over the images of each image's mean intensity; ``border`` /
    ``border_std``: the same for each image's border pixels; ``background``: per channel, the median border
    pixel (what transparent pixels become)."""

    mean: float
    mean_std: float
    border: float
    border_std: float
    background: tuple[float, ...]

    @classmethod
    def of(cls, images: torch.Tensor) -> ImageStats:
        """The statistics of training images ``[N,C,H,W]`` (or the frames of clips ``[N,T,C,H,W]``) in [-1, 1]."""
        x = frames_of(images.detach().float())
        means, borders = x.mean(dim=(1, 2, 3)), _border(x).mean(dim=(1, 2))
        edge = _border(x).transpose(0, 1).reshape(x.shape[1], -1)
        return cls(
            mean=round(float(means.mean()), 6),
            mean_std=round(float(means.std(correction=0)), 6),
            border=round(float(borders.mean()), 6),
            border_std=round(float(borders.std(correction=0)), 6),
            background=tuple(round(float(v), 6) for v in edge.median(dim=1).values),
        )

    def unusual(self, images: torch.Tensor) -> torch.Tensor:
        """Bool ``[N]``: which of ``images`` ``[N,C,H,W]`` (clips ``[N,T,C,H,W]``: any frame) lie far from the
        training images."""
        x = frames_of(images.detach().float())
        off_mean = (x.mean(dim=(1, 2, 3)) - self.mean).abs() > max(SIGMAS * self.mean_std, MEAN_FLOOR)
        off_border = (_border(x).mean(dim=(1, 2)) - self.border).abs() > max(SIGMAS * self.border_std, BORDER_FLOOR)
        return (off_mean | off_border).view(-1, frame_count(images)).any(1)

    def describe(self, images: torch.Tensor) -> str:
        """Mean and border intensity of ``images`` next to the training images', for a message."""
        x = images.detach().float()
        return (
            f"mean intensity {float(x.mean()):.2f} (training images: {self.mean:.2f} ± {self.mean_std:.2f}), "
            f"border {float(_border(x).mean()):.2f} (training: {self.border:.2f} ± {self.border_std:.2f})"
        )

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / STATS_FILE
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ImageStats | None:
        """The statistics saved in ``directory``; None when it has none (a run from before they were kept)."""
        path = Path(directory) / STATS_FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(**{**raw, "background": tuple(raw["background"])})
