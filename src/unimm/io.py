"""Image files in and out: loading user images for captioning, writing sample grids and single images."""

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from unimm.checkpoint import atomic_write
from unimm.data import convert_channels, resize
from unimm.data.transparency import assumed_background, flatten_transparency, has_transparency

MAX_IMAGE_PIXELS = 40_000_000  # larger inputs are refused before decoding (PIL itself allows ~179 M)
IMAGE_FORMATS = {  # the suffixes an output image may have -> the PIL format written
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


def image_format(path: str | Path) -> str:
    """The PIL format named by ``path``'s suffix; ``ValueError`` for a suffix not in ``IMAGE_FORMATS``."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        named = f"suffix {suffix!r}" if suffix else "no suffix"
        raise ValueError(f"{path}: {named} is not an image format unimm writes; use {', '.join(IMAGE_FORMATS)}")
    return IMAGE_FORMATS[suffix]


def _read(path: Path, channels: int, background: tuple[float, ...]) -> np.ndarray:
    """One image file -> float32 [H, W] or [H, W, 3] in 0..255, transparency flattened onto ``background``."""
    try:
        with warnings.catch_warnings():  # PIL warns above ~89 M pixels; the size check below says more
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"image {path} is {w}x{h} pixels, more than unimm.io.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,}; "
                    "shrink it first"
                )
            im.load()
            if has_transparency(im):
                im = flatten_transparency(im, background)
            return np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.float32)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except Image.DecompressionBombError:  # PIL refuses it at open, before we can read its size
        raise ValueError(
            f"image {path} is far larger than unimm.io.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,} pixels; shrink it first"
        ) from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


def load_images(
    paths: str | Path | Sequence[str | Path],
    image_size: int,
    channels: int,
    background: tuple[float, ...] | None = None,
) -> torch.Tensor:
    """Read image files (one path or several) -> [B, C, H, W] in [-1, 1] at the model's size and channel count,
    e.g. ``load_images(["a.png"], model.cfg.data.image_size, model.cfg.data.channels)``. Transparency is
    flattened onto ``background`` (``UnifiedModel.background``; default ``assumed_background(channels)``).
    ``ValueError`` for an unreadable image or one over ``MAX_IMAGE_PIXELS``."""
    background = background or assumed_background(channels)
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise ValueError("no image files given")
    out = []
    for p in paths:
        t = torch.from_numpy(_read(Path(p), channels, background) / 127.5 - 1.0)
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


def save_image(img: Image.Image, path: str | Path) -> Path:
    """Write ``img`` atomically in the format ``path``'s suffix names (see ``image_format``)."""
    path = Path(path)
    fmt = image_format(path)
    extra = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    atomic_write(path, lambda tmp: img.save(tmp, format=fmt, **extra))
    return path


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, scale: int = 2) -> Path:
    """Tile [B, C, H, W] images ``nrow`` per row and write them to ``path`` (format from its suffix)."""
    return save_image(grid_image(images, nrow, scale=scale), path)


def save_images(images: torch.Tensor, paths: Sequence[str | Path], scale: int = 2) -> None:
    """Write each of [B, C, H, W] images to its own file (format from each suffix), enlarged ``scale`` times."""
    for arr, path in zip(to_uint8(images), paths, strict=True):
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        if scale > 1:
            img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        save_image(img, path)


def load_clips(paths: Sequence[str | Path], frames: int, image_size: int, channels: int) -> torch.Tensor:
    """Read clips stored as a video dataset stores them (``.npy`` uint8 ``[T, H, W]`` grey or ``[T, H, W, C]``)
    -> [B, T, C, H, W] in [-1, 1] at the model's size and channel count; ``ValueError`` for an unreadable file
    or another frame count than the model's ``frames``."""
    if not paths:
        raise ValueError("no clip files given")
    out = []
    for p in paths:
        try:
            array = np.load(Path(p), allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read clip {p} (a .npy uint8 [T, H, W]): {err}") from None
        if array.dtype != np.uint8 or array.ndim not in (3, 4) or len(array) != frames:
            raise ValueError(f"{p}: holds {array.dtype} {array.shape}, expected uint8 [{frames}, H, W] (or [.., C])")
        clip = torch.from_numpy(array[..., None] if array.ndim == 3 else array).permute(0, 3, 1, 2) / 127.5 - 1.0
        out.append(resize(convert_channels(clip.float(), channels), image_size))
    return torch.stack(out)


GIF_FRAME_MS = 200  # how long each frame of a clip shows


def save_animated_grid(clips: torch.Tensor, path: str | Path, nrow: int = 8, scale: int = 3) -> Path:
    """Clips [B, T, C, H, W] in [-1, 1] -> an animated GIF at ``path`` whose frame t tiles every clip's frame t,
    ``nrow`` clips per row, looping."""
    frames = [grid_image(clips[:, t], nrow, scale=scale) for t in range(clips.shape[1])]

    def write(tmp: Path) -> None:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)

    atomic_write(Path(path), write)
    return Path(path)
