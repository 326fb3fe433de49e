"""Images from requests: a ``data:`` URL -> the model's input tensor, refused early when too large or not an image."""

import base64
import binascii
import io
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from unimm.data import convert_channels, resize
from unimm.data.transparency import flatten_transparency, has_transparency
from unimm.serve.limits import ServeLimits


def decode_data_url(url: str, limits: ServeLimits) -> bytes:
    """``data:image/...;base64,XXXX`` -> the image bytes; ``ValueError`` naming what is wrong."""
    if not url.startswith("data:") or ";base64," not in url[:100]:
        raise ValueError("image_url.url must be a data:image/...;base64,... URL (remote URLs are not fetched)")
    payload = url.split(",", 1)[1]
    if len(payload) * 3 // 4 > limits.max_image_bytes:
        raise ValueError(f"image is larger than max_image_bytes = {limits.max_image_bytes:,}")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("image_url.url holds invalid or truncated base64") from None


def image_tensor(data: bytes, image_size: int, channels: int, background: tuple[float, ...], limits: ServeLimits):
    """Image bytes -> [C, H, W] float in [-1, 1] at the model's size; ``ValueError`` for a non-image or one over
    ``max_image_side``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        with im:
            if max(im.size) > limits.max_image_side:
                raise ValueError(
                    f"image is {im.width}x{im.height}, a side over max_image_side = {limits.max_image_side}"
                )
            im.load()
            if has_transparency(im):
                im = flatten_transparency(im, background)
            arr = np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.float32)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"the upload is not a readable image: {err}") from None
    t = torch.from_numpy(arr / 127.5 - 1.0)
    t = t.permute(2, 0, 1) if t.ndim == 3 else t[None]
    return resize(convert_channels(t[None], channels), image_size)[0]


def png_base64(image: torch.Tensor) -> str:
    """[C, H, W] in [-1, 1] -> base64 PNG."""
    arr = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
