"""A video dataset on disk: a folder per split of ``.npy`` clips with a ``captions.jsonl``, and ``meta.json``.

    <root>/meta.json                 {"format": "video", "frames": T, "size": [H, W], "counts": ..., ...}
    <root>/<split>/000000.npy        uint8 [T, H, W] (grey, 0 = background)
    <root>/<split>/captions.jsonl    {"file", "split", "caption", "captions", "qa": [{question, answer}], "truth"}

Reading skips and counts a broken clip (missing, not a ``.npy``, truncated, wrong shape) or a malformed
line, like ``sources.py`` does, and stops with one ``TooManySkipsError`` line naming the file (and the line)
once more than ``max_skip_fraction`` is broken (default 0: any).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.lib.format as npy
import torch

from unimm.data.datasets import ImageTextData
from unimm.data.formats import CAPTIONS_FILE, META_FILE, SPLITS, load_meta_json, write_meta
from unimm.data.sources import SkipStats, json_rows

VIDEO_FORMAT = "video"


class VideoWriter:
    """Write clips split by split; ``finish`` writes each split's ``captions.jsonl`` and ``meta.json``."""

    def __init__(self, root: str | Path, frames: int, size: int) -> None:
        self.root, self.frames, self.size = Path(root), frames, size
        self.rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}

    def add(
        self, split: str, clip: np.ndarray, captions: list[str], qa: list[dict[str, str]], truth: dict[str, Any]
    ) -> None:
        """Store one uint8 ``[T, H, W]`` clip with its captions, questions and truth."""
        if clip.dtype != np.uint8 or clip.shape != (self.frames, self.size, self.size):
            raise ValueError(f"clip must be uint8 {(self.frames, self.size, self.size)}, got {clip.dtype} {clip.shape}")
        file = f"{len(self.rows[split]):06d}.npy"
        buffer = io.BytesIO()
        np.save(buffer, clip, allow_pickle=False)
        (self.root / split).mkdir(parents=True, exist_ok=True)
        (self.root / split / file).write_bytes(buffer.getvalue())
        row = {"file": file, "split": split, "caption": captions[0], "captions": captions, "qa": qa, "truth": truth}
        self.rows[split].append(row)

    def finish(self, name: str, class_names: list[str] | None, **extra: Any) -> dict[str, Any]:
        """Write the listings and ``meta.json``; returns the meta."""
        for split, rows in self.rows.items():
            (self.root / split).mkdir(parents=True, exist_ok=True)
            lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            (self.root / split / CAPTIONS_FILE).write_text(lines, encoding="utf-8")
        meta = {
            "format": VIDEO_FORMAT,
            "name": name,
            "class_names": class_names,
            "caption_kind": "digit",
            "frames": self.frames,
            "size": [self.size, self.size],
            "clip": "npy uint8 [T, H, W]",
            "counts": {split: len(rows) for split, rows in self.rows.items()},
            **extra,
        }
        write_meta(self.root, meta)
        return meta


def is_video_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a dir whose ``meta.json`` says ``"format": "video"``."""
    try:
        return read_video_meta(path)["format"] == VIDEO_FORMAT
    except (OSError, ValueError):
        return False


def read_video_meta(root: str | Path) -> dict[str, Any]:
    """``meta.json`` of a video dataset; ``ValueError`` naming the file if it is not one."""
    path = Path(root) / META_FILE
    meta = load_meta_json(path)
    if not isinstance(meta, dict) or meta.get("format") != VIDEO_FORMAT:
        raise ValueError(f'{path}: not a video dataset (no "format": "video")')
    if not isinstance(meta.get("frames"), int) or not isinstance(meta.get("size"), list) or len(meta["size"]) != 2:
        raise ValueError(f"{path}: a video meta needs integer 'frames' and 'size': [H, W]")
    return meta


def read_clip(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """A uint8 ``[T, H, W]`` clip; ``FileNotFoundError`` or ``ValueError`` naming ``path`` if it is unusable."""
    with path.open("rb") as handle:
        try:
            version = npy.read_magic(handle)
            header = npy.read_array_header_1_0(handle) if version == (1, 0) else npy.read_array_header_2_0(handle)
        except ValueError as err:
            raise ValueError(f"{path}: not a .npy file ({err})") from err
        stored, fortran, dtype = header
        data = handle.read()
    if dtype != np.uint8 or tuple(stored) != shape:
        raise ValueError(f"{path}: holds {dtype} {tuple(stored)}, expected uint8 {shape}")
    expected = int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(f"{path}: truncated .npy (needs {expected} data bytes, found {len(data)})")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape, order="F" if fortran else "C").copy()


def _rows(path: Path, stats: SkipStats) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of a split's ``captions.jsonl``; a malformed line is counted as ``bad_json``."""
    found = []
    for number, row in json_rows(path, stats):
        file = row.get("file")
        if not isinstance(file, str) or Path(file).name != file or not isinstance(row.get("caption"), str):
            stats.skip("bad_json", f"{path}:{number}", "a row needs 'file' (a name in the split dir) and 'caption'")
            continue
        found.append((number, row))
    return found


def load_video_data(root: str | Path, split: str) -> ImageTextData:
    """A split of a video dataset as training data: clips float ``[N, T, 1, H, W]`` in [-1, 1], each with its
    first caption, its questions and answers, and its digit's class as the label (-1 for a clip of several
    digits, which no single class names)."""
    videos = load_video_split(root, split)
    labels = [
        digits[0]["label"] if len(digits := r.get("truth", {}).get("digits", [])) == 1 else -1 for r in videos.records
    ]
    meta = read_video_meta(root)
    return ImageTextData(
        images=videos.clips.float() / 127.5 - 1.0,
        labels=torch.tensor(labels, dtype=torch.long),
        captions=[r["caption"] for r in videos.records],
        class_names=videos.class_names,
        caption_kind=meta.get("caption_kind", "generic"),
        name=videos.name,
        qa=[[(q["question"], q["answer"]) for q in r.get("qa", [])] for r in videos.records],
    )


@dataclass
class VideoSplit:
    """One split in memory: ``clips`` uint8 ``[N, T, 1, H, W]``, ``records`` the matching listing rows."""

    clips: torch.Tensor
    records: list[dict[str, Any]]
    class_names: list[str] | None
    name: str
    skipped: SkipStats

    def __len__(self) -> int:
        return len(self.records)


def load_video_split(root: str | Path, split: str, max_skip_fraction: float = 0.0) -> VideoSplit:
    """Read ``split`` of the video dataset at ``root``; broken clips and lines are skipped and counted, and
    ``TooManySkipsError`` names the first of them once more than ``max_skip_fraction`` are broken."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    meta = read_video_meta(root)
    shape = (meta["frames"], *meta["size"])
    listing = root / split / CAPTIONS_FILE
    if not listing.is_file():
        raise FileNotFoundError(f"{listing}: no such file (the listing of split {split!r})")
    stats = SkipStats(str(root / split), max_skip_fraction)
    clips, records = [], []
    for number, row in _rows(listing, stats):
        try:
            clips.append(read_clip(root / split / row["file"], shape))
        except FileNotFoundError:
            stats.skip("missing_clip", str(root / split / row["file"]), f"no such file ({listing.name} line {number})")
            continue
        except ValueError as err:
            path = root / split / row["file"]
            stats.skip("bad_clip", str(path), f"{str(err).removeprefix(f'{path}: ')} ({listing.name} line {number})")
            continue
        records.append(row)
        stats.keep()
    stats.check(final=True)
    tensor = torch.from_numpy(np.stack(clips)) if clips else torch.zeros((0, *shape), dtype=torch.uint8)
    return VideoSplit(tensor.unsqueeze(2), records, meta.get("class_names"), meta.get("name", root.name), stats)
