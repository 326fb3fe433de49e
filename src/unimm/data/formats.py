"""Read and write the two on-disk dataset formats: IDX arrays and a captioned PNG folder.

IDX dataset dir: ``{split}-images.idx``, ``{split}-labels.idx`` for each split, plus ``meta.json``.
Folder dataset dir: ``images/*.png``, ``captions.jsonl`` (one row per image) plus ``meta.json``.
Every writer is deterministic: the same inputs give byte-identical files.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")
META_FILE = "meta.json"
CAPTIONS_FILE = "captions.jsonl"
IMAGES_DIR = "images"

# IDX type codes (third magic byte) and the big-endian numpy dtype each one means.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES: dict[str, int] = {dt.kind + str(dt.itemsize): code for code, dt in _IDX_DTYPES.items()}


# ----------------------------------------------------------------------------------------------- IDX


def encode_idx(array: np.ndarray) -> bytes:
    """Serialise an array (uint8, int8, int16, int32, float32 or float64) as IDX bytes."""
    array = np.asarray(array)
    if array.dtype == np.int64:  # labels often arrive as int64; IDX has no 64-bit integers
        if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
            raise ValueError("int64 values do not fit in IDX int32")
        array = array.astype(np.int32)
    key = array.dtype.kind + str(array.dtype.itemsize)
    if key not in _IDX_CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {array.ndim}")
    code = _IDX_CODES[key]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(_IDX_DTYPES[code], copy=False).tobytes(order="C")


def decode_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a native-endian array; ``ValueError`` naming ``name`` if malformed."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name}: not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{name}: unknown IDX type code 0x{code:02x}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header_len
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise ValueError(f"{name}: IDX file {what} (shape {shape} needs {expected} data bytes, found {got})")
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` in IDX format."""
    Path(path).write_bytes(encode_idx(array))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file; ``ValueError`` naming the file if it is corrupt or truncated."""
    path = Path(path)
    return decode_idx(path.read_bytes(), name=str(path))


# ---------------------------------------------------------------------------------------------- meta


def write_meta(root: str | Path, meta: dict[str, Any]) -> None:
    """Write ``meta.json`` (keys kept in the given order, so the bytes are stable)."""
    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    (Path(root) / META_FILE).write_text(text, encoding="utf-8")


def load_meta_json(path: Path) -> Any:
    """The parsed ``meta.json`` at ``path``; ``ValueError`` naming the file if it is not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from err


def read_meta(root: str | Path) -> dict[str, Any]:
    """Read ``meta.json`` of a dataset dir; ``ValueError`` if it is not valid JSON with a format."""
    path = Path(root) / META_FILE
    meta = load_meta_json(path)
    if isinstance(meta, dict) and meta.get("format") == "video":
        raise ValueError(f"{path}: a video dataset (clips): read it with unimm.data.video_store.load_video_split")
    if not isinstance(meta, dict) or meta.get("format") not in ("idx", "folder"):
        raise ValueError(f"{path}: expected an object with format 'idx' or 'folder'")
    return meta


def make_meta(fmt: str, name: str, class_names: list[str] | None, caption_kind: str, **extra: Any) -> dict[str, Any]:
    """Build a meta dict with the standard keys first, then any extras (e.g. ``source``)."""
    return {"format": fmt, "name": name, "class_names": class_names, "caption_kind": caption_kind, **extra}


# ---------------------------------------------------------------------------------------- IDX dataset


def idx_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """Paths of the images and labels files of one split."""
    root = Path(root)
    return root / f"{split}-images.idx", root / f"{split}-labels.idx"


def write_idx_split(root: str | Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one split: uint8 images ``[N,H,W]`` or ``[N,H,W,C]`` and integer labels ``[N]``."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"images must be uint8 [N,H,W] or [N,H,W,C], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be [N] with N={len(images)}, got {labels.shape}")
    labels = labels.astype(np.uint8) if labels.min(initial=0) >= 0 and labels.max(initial=0) < 256 else labels
    image_path, label_path = idx_paths(root, split)
    write_idx(image_path, images)
    write_idx(label_path, labels)


def read_idx_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split: (uint8 images ``[N,H,W(,C)]``, int64 labels ``[N]``)."""
    image_path, label_path = idx_paths(root, split)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"{image_path}: expected uint8 images [N,H,W(,C)], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{label_path}: expected {len(images)} labels, got shape {labels.shape}")
    return images, labels.astype(np.int64)


# ------------------------------------------------------------------------------------- folder dataset


def encode_png(image: Image.Image | np.ndarray) -> bytes:
    """PNG bytes of an image (uint8 ``[H,W]``, ``[H,W,3]`` or a PIL image), with no metadata chunks."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if image.mode not in ("L", "RGB"):
        raise ValueError(f"store images as L or RGB, got mode {image.mode}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


def read_png(path: str | Path) -> np.ndarray:
    """Decode a PNG to uint8 ``[H,W]`` (grey) or ``[H,W,3]``; ``ValueError`` naming a corrupt file."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB")
            return np.asarray(image, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise
    except Exception as err:  # Pillow raises several types for broken files
        raise ValueError(f"{path}: cannot decode image ({err})") from err


class FolderWriter:
    """Write a captioned folder dataset image by image; ``close`` writes ``captions.jsonl``.

    Images are named ``images/000000.png``, ``images/000001.png``, ... in the order they are added.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        image: Image.Image | np.ndarray,
        caption: str,
        split: str,
        label: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Store one image with its caption, split and optional label / per-row meta."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        file = f"{IMAGES_DIR}/{len(self.rows):06d}.png"
        (self.root / file).write_bytes(encode_png(image))
        row: dict[str, Any] = {"file": file, "caption": caption, "split": split}
        if label is not None:
            row["label"] = int(label)
        if meta is not None:
            row["meta"] = meta
        self.rows.append(row)

    def close(self) -> None:
        """Write ``captions.jsonl``."""
        lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows]
        (self.root / CAPTIONS_FILE).write_text("".join(lines), encoding="utf-8")

    def __enter__(self) -> FolderWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()


def iter_folder_rows(root: str | Path, split: str | None = None) -> Iterator[dict[str, Any]]:
    """Rows of ``captions.jsonl`` (optionally only one split); ``ValueError`` on a malformed line."""
    path = Path(root) / CAPTIONS_FILE
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: invalid JSON ({err})") from err
            if not isinstance(row, dict) or not {"file", "caption", "split"} <= row.keys():
                raise ValueError(f"{path}:{number}: a row needs 'file', 'caption' and 'split'")
            if split is None or row["split"] == split:
                yield row
