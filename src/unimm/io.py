"""Image files in and out: loading user images for captioning, writing sample grids."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from unimm.checkpoint import atomic_write
from unimm.data import convert_channels, resize
from unimm.data.transparency import assumed_background, flatten_transparency, has_transparency


def load_images(
    paths: list[Path], image_size: int, channels: int, background: tuple[float, ...] | None = None
) -> torch.Tensor:
    """Read image files -> [B, C, H, W] in [-1, 1] at the model's size and channel count. Transparency is
    flattened onto ``background`` (``UnifiedModel.background``; default ``assumed_background(channels)``)."""
    background = background or assumed_background(channels)
    out = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                if has_transparency(im):
                    im = flatten_transparency(im, background)
                arr = np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.float32)
        except FileNotFoundError:
            raise FileNotFoundError(f"image not found: {p}") from None
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read image {p}: {err}") from None
        t = torch.from_numpy(arr / 127.5 - 1.0)
        t = t.permute(2, 0, 1) if t.ndim == 3 else t[None]
        out.append(resize(convert_channels(t[None], channels), image_size)[0])
    return torch.stack(out)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] in [-1, 1] -> uint8 [B, H, W, C]."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid_image(images: torch.Tensor, nrow: int, pad: int = 2, scale: int = 1) -> Image.Image:
    """Tile [B, C, H, W] images into one PIL image with ``nrow`` images per row."""
    arr = to_uint8(images)
    b, h, w, c = arr.shape
    rows = (b + nrow - 1) // nrow
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(b):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = arr[i]
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, scale: int = 2) -> Path:
    path = Path(path)
    img = grid_image(images, nrow, scale=scale)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return path
