"""Write records as deterministic WebDataset tar shards, convert a source to a shard dataset, load it back.

A shard dataset dir: ``meta.json`` (format "shards", per-split shard lists) and ``<split>/shard-000000.tar``, ...
A sample is ``<key>.png`` (its first image) + ``<key>.json`` (``key``, ``caption``, ``turns``, ``segments``);
further images of an interleaved document are ``<key>.1.png``, ``<key>.2.png``, ...
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unimm.data.canonical import find_canonical
from unimm.data.conversations import PROMPT_SEGMENTS, record_conversation
from unimm.data.datasets import ImageTextData, _to_nchw, convert_channels, resize
from unimm.data.formats import META_FILE, SPLITS, encode_png, make_meta, write_meta
from unimm.data.sources import Record, SkipStats, Source, counted, read_shards

SHARD_NAME = "shard-{:06d}.tar"


def split_for(key: str, val_fraction: float, test_fraction: float, seed: int = 0) -> str:
    """train/val/test from a hash of ``seed`` and ``key``: stable across runs, machines and input order."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"


def resize_uint8(image: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 ``[H,W]`` or ``[H,W,3]`` resized to ``image_size`` square with ``datasets.resize``."""
    out = resize(_to_nchw(image[None]), image_size)[0].permute(1, 2, 0)
    pixels = ((out + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return pixels[..., 0] if image.ndim == 2 else pixels


def sample_members(record: Record, image_size: int | None = None) -> list[tuple[str, bytes]]:
    """(extension, bytes) tar members of one record: images as PNG, the rest as JSON."""
    fit = (lambda a: resize_uint8(a, image_size)) if image_size else (lambda a: a)
    images = [s for s in record.segments or [] if isinstance(s, np.ndarray)]
    if record.image is not None and not images:
        images = [record.image]
    segments = None
    if record.segments is not None:
        segments, index = [], 0
        for s in record.segments:
            if isinstance(s, str):
                segments.append({"text": s})
            else:
                segments.append({"image": index})
                index += 1
    turns = [list(t) for t in record.turns] if record.turns is not None else None
    meta = {"key": record.key, "caption": record.text, "turns": turns, "segments": segments}
    members = [("json", json.dumps(meta, ensure_ascii=False).encode())]
    return members + [("png" if i == 0 else f"{i}.png", encode_png(fit(a))) for i, a in enumerate(images)]


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644  # fixed metadata: same input, same bytes
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class ShardWriter:
    """Write records to ``out_dir/shard-000000.tar``, ... with ``samples_per_shard`` samples each.

    A shard is written to a hidden temp file and renamed once complete, so no half shard has a final name.
    Keys are made tar-safe (``[A-Za-z0-9_-]``) and unique.
    """

    def __init__(self, out_dir: str | Path, samples_per_shard: int = 1000, image_size: int | None = None) -> None:
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.out_dir, self.samples_per_shard, self.image_size = Path(out_dir), samples_per_shard, image_size
        self.paths: list[Path] = []
        self.count = 0
        self._tar: tarfile.TarFile | None = None
        self._in_shard = 0
        self._keys: set[str] = set()

    def _safe_key(self, key: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_-]", "_", key) or "sample"
        safe, n = base, 0
        while safe in self._keys:
            n += 1
            safe = f"{base}_{n}"
        self._keys.add(safe)
        return safe

    def _tmp(self) -> Path:
        return self.out_dir / f".{SHARD_NAME.format(len(self.paths))}.tmp"

    def add(self, record: Record) -> None:
        """Append one record, starting a new shard when the current one is full."""
        if self._tar is None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._tar = tarfile.open(self._tmp(), "w", format=tarfile.PAX_FORMAT)
        key = self._safe_key(record.key)
        for ext, data in sample_members(record, self.image_size):
            self._tar.addfile(_tar_info(f"{key}.{ext}", len(data)), io.BytesIO(data))
        self.count += 1
        self._in_shard += 1
        if self._in_shard == self.samples_per_shard:
            self._finish_shard()

    def _finish_shard(self) -> None:
        tmp = self._tmp()
        self._tar.close()
        self._tar, self._in_shard = None, 0
        path = self.out_dir / SHARD_NAME.format(len(self.paths))
        os.replace(tmp, path)
        self.paths.append(path)

    def close(self) -> list[Path]:
        """Finish the last shard; the paths of all shards written."""
        if self._tar is not None:
            self._finish_shard()
        return self.paths

    def abort(self) -> None:
        """Delete every shard this writer wrote, and the one in progress."""
        if self._tar is not None:
            self._tar.close()
            self._tmp().unlink(missing_ok=True)
            self._tar = None
        for path in self.paths:
            path.unlink(missing_ok=True)
        self.paths = []

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()


def write_shards(
    records: Iterable[Record], out_dir: str | Path, samples_per_shard: int = 1000, image_size: int | None = None
) -> list[Path]:
    """Write ``records`` as tar shards in ``out_dir`` (images resized to ``image_size`` if given); the shard paths."""
    with ShardWriter(out_dir, samples_per_shard, image_size) as writer:
        for record in records:
            writer.add(record)
    return writer.paths


def convert_to_shards(
    source: Source,
    out: str | Path,
    samples_per_shard: int = 1000,
    image_size: int | None = None,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    seed: int = 0,
    force: bool = False,
) -> dict[str, Any]:
    """Stream ``source`` into a shard dataset at ``out``; returns the meta written to ``meta.json``.

    A record keeps the split its source names; others are split by a hash of their group (image) or key.
    Canonical IDX files (``mnist-idx``) need class names (``classes.txt``): their captions are made from them.
    """
    if not 0 <= val_fraction + test_fraction < 1 or min(val_fraction, test_fraction) < 0:
        raise ValueError(f"need 0 <= val/test fractions with sum < 1, got {val_fraction} and {test_fraction}")
    canonical = find_canonical(source.path) if source.format == "mnist-idx" else None
    if canonical is not None:  # without files the reader says so
        canonical.require_class_names()
    out = Path(out)
    if (out / META_FILE).exists():
        if not force:
            raise FileExistsError(f"{out} already holds a dataset ({META_FILE}); pass --force to replace it")
        (out / META_FILE).unlink()
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
    writers = {split: ShardWriter(out / split, samples_per_shard, image_size) for split in SPLITS}
    try:
        for record in source:
            split = record.split or split_for(record.group or record.key, val_fraction, test_fraction, seed)
            writers[split].add(record)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    splits = {split: [p.relative_to(out).as_posix() for p in w.close()] for split, w in writers.items()}
    meta = make_meta(
        "shards",
        out.resolve().name,
        None,
        "generic",
        splits=splits,
        counts={split: w.count for split, w in writers.items()},
        image_size=image_size,
        source=str(source.path),
        source_format=source.format,
        skipped=dict(sorted(source.stats.reasons.items())),
    )
    write_meta(out, meta)
    return meta


def to_image_text_data(
    records: Iterable[Record],
    image_size: int | None = None,
    channels: int | None = None,
    name: str = "records",
    prompt_segments: int = 1,
) -> ImageTextData:
    """Records with an image -> ``ImageTextData`` (captions from ``text``, labels -1). A record's conversation (LLaVA
    turns) or document (segments) is kept too, as ``conversations`` (``data/conversations.py``; a document's first
    ``prompt_segments`` are read, the rest produced); None when no record has one.

    ``channels`` None: 3 if any image is RGB, else 1. ``image_size`` None: images must share one size.
    """
    kept = [r for r in records if r.image is not None]  # text-only conversations/documents have no image to train on
    if not kept:
        raise ValueError(f"{name}: no records with an image")
    every = [a for r in kept for a in [r.image, *(s for s in r.segments or [] if isinstance(s, np.ndarray))]]
    channels = channels or (3 if any(a.ndim == 3 for a in every) else 1)
    if image_size is None and len({a.shape[:2] for a in every}) > 1:
        raise ValueError(f"{name}: images differ in size {sorted({a.shape[:2] for a in every})}; pass image_size")

    def to_tensor(array: np.ndarray) -> torch.Tensor:
        image = convert_channels(_to_nchw(array[None]), channels)
        return (resize(image, image_size) if image_size else image)[0]

    conversations = [record_conversation(r, to_tensor, prompt_segments) for r in kept]
    return ImageTextData(
        images=torch.stack([to_tensor(r.image) for r in kept]),
        labels=torch.full((len(kept),), -1, dtype=torch.long),
        captions=[r.text for r in kept],
        class_names=None,
        caption_kind="generic",
        name=name,
        conversations=conversations if any(c is not None for c in conversations) else None,
    )


def is_shard_dataset(root: str | Path) -> bool:
    """Whether ``root/meta.json`` is readable JSON naming the "shards" format."""
    try:
        meta = json.loads((Path(root) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == "shards"


def load_shard_split(
    root: str | Path, split: str, image_size: int | None = None, channels: int | None = None
) -> ImageTextData:
    """Read ``split`` of a shard dataset written by ``convert_to_shards``."""
    root = Path(root)
    meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
    files = meta.get("splits", {}).get(split)
    if not files:
        raise ValueError(f"{root}: split {split!r} has no shards (counts: {meta.get('counts')})")
    stats = SkipStats(str(root / split))
    records = counted(read_shards([root / f for f in files], stats), stats)
    prompt = PROMPT_SEGMENTS.get(meta.get("source_format"), 1)
    data = to_image_text_data(records, image_size, channels, meta["name"], prompt)
    data.caption_kind = meta.get("caption_kind", "generic")
    return data
