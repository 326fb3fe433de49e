"""Read the dataset formats users bring as one stream of ``Record``s, skipping and counting broken samples.

Formats (``FORMATS``):
``webdataset``  tar shards: one ``.tar``, a dir of them or a brace pattern ``shard-{000000..000003}.tar``;
                members ``<key>.jpg|png|webp`` + ``<key>.txt`` and/or ``<key>.json`` (``caption`` or ``text``).
``coco``        ``annotations/captions_<name>.json`` (``images`` + ``annotations``), images under ``<name>/``.
``llava``       a JSON list (or jsonl) of ``{id, image, conversations: [{from: human|gpt, value}]}``.
``interleaved`` jsonl documents, OBELICS ``{texts, images}`` or MMC4 ``{text_list, image_info}``.
``imagefolder`` images with same-stem ``.txt`` captions, or a ``metadata.jsonl``/``captions.jsonl``.
``shape-edits`` ``python -m unimm.data.edits``'s folder: ``edits.jsonl`` rows naming ``source_file``,
                ``target_file`` and the ``instruction``; a record is the document [source image, instruction,
                target image].
``mnist-idx``   canonical IDX files (``train-images-idx3-ubyte[.gz]``, ``t10k-...``; ``canonical.py``): a record per
                image, split as ``load_split`` splits them, its text a class template caption (names from
                ``classes.txt``; ``label <n>`` without one, which ``convert`` refuses).
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import tarfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unimm.data.canonical import find_canonical, is_canonical_name, val_indices
from unimm.data.captions import CaptionTemplates
from unimm.data.formats import SPLITS

FORMATS = ("webdataset", "coco", "llava", "interleaved", "imagefolder", "shape-edits", "mnist-idx")
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp", "gif")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
MAX_EXAMPLES = 5  # offending keys kept for the report
MAX_LOGGED = 10  # warnings logged per reason; the rest are only counted
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}

logger = logging.getLogger(__name__)

Segment = str | np.ndarray


@dataclass
class Record:
    """One sample, whatever the source format.

    ``image`` uint8 ``[H,W]`` (grey) or ``[H,W,3]``, None for a text-only sample; ``text`` the caption
    (LLaVA: the first assistant reply; interleaved: the text segments joined); ``turns`` (role, text) pairs
    with roles user/assistant/system; ``segments`` an interleaved document's strings and images in order;
    ``split`` the source's own split if it names one; ``group`` keeps records of one image in one split.
    """

    key: str
    image: np.ndarray | None
    text: str
    turns: list[tuple[str, str]] | None = None
    segments: list[Segment] | None = None
    split: str | None = None
    group: str | None = None


class TooManySkipsError(ValueError):
    """More samples of a source were broken than ``max_skip_fraction`` allows."""


@dataclass
class SkipStats:
    """Kept/skipped counts of one pass over a source; raises once the skipped fraction is too high.

    The fraction is checked once ``min_seen`` samples were seen, and always at the end of the pass.
    """

    source: str
    max_skip_fraction: float = 0.01
    min_seen: int = 100
    kept: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[str, str, str]] = field(default_factory=list)  # (reason, key, detail)

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    @property
    def seen(self) -> int:
        return self.kept + self.skipped

    def keep(self) -> None:
        self.kept += 1
        self.check()

    def skip(self, reason: str, key: str, detail: str) -> None:
        """Count one broken sample and log it (the first ``MAX_LOGGED`` per reason)."""
        self.reasons[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((reason, key, detail))
        if self.reasons[reason] <= MAX_LOGGED:
            logger.warning("%s: skipped %s (%s: %s)", self.source, key, reason, detail)
        self.check()

    def summary(self) -> str:
        reasons = ", ".join(f"{reason}={n}" for reason, n in sorted(self.reasons.items())) or "none"
        fraction = self.skipped / max(self.seen, 1)
        return f"skipped {self.skipped} of {self.seen} samples ({fraction:.1%}): {reasons}"

    def check(self, final: bool = False) -> None:
        """``TooManySkipsError`` naming the source, the counts and an example key if too many were skipped."""
        if (final or self.seen >= self.min_seen) and self.skipped > self.max_skip_fraction * self.seen:
            reason, key, detail = self.examples[0]
            raise TooManySkipsError(
                f"{self.source}: {self.summary()}, more than max_skip_fraction={self.max_skip_fraction:g}; "
                f"e.g. {key!r} ({reason}: {detail}). Fix or remove the broken samples, or raise the threshold "
                "(--max-skip-fraction)"
            )


# ---------------------------------------------------------------------------------------------- helpers


def decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes to uint8 ``[H,W]`` (grey) or ``[H,W,3]``; transparency is composited on white."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode in ("L", "RGB"):
            return np.asarray(image, dtype=np.uint8).copy()
        if image.mode in ("1", "I", "I;16", "F"):
            return np.asarray(image.convert("L"), dtype=np.uint8).copy()
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image.convert("RGBA"))
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _decode(source: Path | bytes) -> tuple[np.ndarray | None, str, str]:
    """(image, "", "") or (None, reason, detail) with reason ``missing_image`` or ``bad_image``."""
    try:
        return decode_image(source if isinstance(source, bytes) else source.read_bytes()), "", ""
    except FileNotFoundError:
        return None, "missing_image", f"no file {source}"
    except Exception as err:  # Pillow raises several types for broken or truncated files
        return None, "bad_image", f"{type(err).__name__}: {err}"


def _image(source: Path | bytes, key: str, stats: SkipStats) -> np.ndarray | None:
    """Decoded image, or None after counting why not."""
    image, reason, detail = _decode(source)
    if image is None:
        stats.skip(reason, key, detail)
    return image


def _text(value: Any, key: str, stats: SkipStats) -> str | None:
    """Stripped caption, or None after counting it as ``missing_text``, ``bad_text`` or ``empty_text``."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            stats.skip("bad_text", key, str(err))
            return None
    if value is None:
        stats.skip("missing_text", key, "no caption")
        return None
    if not isinstance(value, str):
        stats.skip("bad_text", key, f"caption is a {type(value).__name__}, not a string")
        return None
    if not value.strip():
        stats.skip("empty_text", key, "empty caption")
        return None
    return value.strip()


def json_rows(path: Path, stats: SkipStats) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of a jsonl file; malformed lines are counted as ``bad_json``."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                stats.skip("bad_json", f"{path.name}:{number}", str(err))
                continue
            if not isinstance(row, dict):
                stats.skip("bad_json", f"{path.name}:{number}", "line is not a JSON object")
                continue
            yield number, row


def _resolve(name: str, roots: list[Path]) -> Path:
    """``name`` under the first root that has it (the first root if none does)."""
    return next((root / name for root in roots if (root / name).is_file()), roots[0] / name)


def _split_name(name: str) -> str | None:
    """train/val/test from a name like ``captions_train2017`` or ``validation``; None if it names none."""
    match = re.search(r"(train|validation|valid|val|test)", name.lower())
    return _SPLIT_NAMES[match.group(1)] if match else None


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{a,b}`` lists and zero-padded ``{000..003}`` ranges, e.g. ``s-{0..1}.tar`` -> s-0.tar, s-1.tar."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    numbers = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numbers:
        lo, hi = numbers.groups()
        options = [str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    return [out for option in options for out in expand_braces(head + option + tail)]


def shard_paths(path: str | Path) -> list[Path]:
    """The tar shards named by ``path``: a file, a dir searched recursively (sorted) or a brace pattern."""
    if "{" in str(path):
        return [Path(p) for p in expand_braces(str(path))]
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(TAR_SUFFIXES))
    return [path]


# --------------------------------------------------------------------------------------------- readers


def _tar_samples(path: Path, stats: SkipStats) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) of consecutive members sharing a key; a truncated shard ends with one ``bad_shard``."""
    plain = path.suffix.lower() == ".tar"
    key, parts, end = None, {}, 0
    try:
        with tarfile.open(path, "r|" if plain else "r|*") as tar:
            for member in tar:
                folder, _, base = member.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                if not member.isfile() or not dot or not stem:
                    continue
                name = f"{folder}/{stem}" if folder else stem
                if name != key and key is not None:
                    yield key, parts
                    parts = {}
                key = name
                parts[ext.lower()] = tar.extractfile(member).read()
            end = tar.offset
    except FileNotFoundError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        stats.skip("bad_shard", f"{path.name}:{key}" if key else path.name, f"{type(err).__name__}: {err}")
        return
    # tarfile takes a header cut short for the end of the archive; a whole end block must follow the last member
    if plain and path.stat().st_size < end + tarfile.BLOCKSIZE:
        stats.skip("bad_shard", f"{path.name}:{key}", "truncated: the file ends inside a member header")
        return
    if key is not None:
        yield key, parts


def _shard_record(key: str, parts: dict[str, bytes], split: str | None, stats: SkipStats) -> Record | None:
    meta: dict[str, Any] = {}
    if "json" in parts:
        try:
            meta = json.loads(parts["json"])
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            stats.skip("bad_json", key, str(err))
            return None
        if not isinstance(meta, dict):
            meta = {}
    key = str(meta.get("key", key))
    text = _text(parts["txt"] if "txt" in parts else meta.get("caption", meta.get("text")), key, stats)
    if text is None:
        return None
    ext = next((e for e in IMAGE_EXTS if e in parts), None)
    image = _image(parts[ext], key, stats) if ext else None
    if ext and image is None:
        return None
    try:
        turns = [(str(r), str(t)) for r, t in meta["turns"]] if meta.get("turns") else None
        refs = [s.get("text", s.get("image")) for s in meta["segments"]] if meta.get("segments") else None
    except (TypeError, ValueError, AttributeError) as err:
        stats.skip("bad_json", key, f"malformed turns/segments ({err})")
        return None
    segments: list[Segment] | None = None
    if refs is not None:  # written by unimm.data.shards: text, or image index i = member "png" (0) or "{i}.png"
        segments = []
        for ref in refs:
            if isinstance(ref, str):
                segments.append(ref)
                continue
            data = parts.get(f"{ref}.png") if ref else None
            decoded = image if ref == 0 else _image(data, key, stats) if data is not None else None
            if decoded is None:
                if ref == 0 or data is None:
                    stats.skip("missing_image", key, f"no member for segment image {ref}")
                return None
            segments.append(decoded)
    if image is None and turns is None and segments is None:
        stats.skip("missing_image", key, f"no {'/'.join(IMAGE_EXTS)} member")
        return None
    return Record(key, image, text, turns=turns, segments=segments, split=split)


def read_shards(paths: list[Path], stats: SkipStats) -> Iterator[Record]:
    """Records of WebDataset tar shards; a shard under a train/val/test folder gives its records that split."""
    for path in paths:
        split = path.parent.name if path.parent.name in SPLITS else None
        for key, parts in _tar_samples(path, stats):
            record = _shard_record(key, parts, split, stats)
            if record is not None:
                yield record


def _read_webdataset(path: str | Path, stats: SkipStats) -> Iterator[Record]:
    paths = shard_paths(path)
    if not paths:
        raise ValueError(f"{path}: no .tar shards found")
    yield from read_shards(paths, stats)


def _coco_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted((path / "annotations").glob("captions_*.json")) or sorted(path.glob("captions_*.json"))
    if not files:
        raise ValueError(f"{path}: no annotations/captions_*.json")
    return files


def _read_coco(path: str | Path, stats: SkipStats) -> Iterator[Record]:
    for ann_file in _coco_files(Path(path)):
        data = json.loads(ann_file.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not {"images", "annotations"} <= data.keys():
            raise ValueError(f"{ann_file}: a COCO captions file needs 'images' and 'annotations'")
        root = ann_file.parent.parent if ann_file.parent.name == "annotations" else ann_file.parent
        name = ann_file.stem.removeprefix("captions_")
        roots = [root / name, root / "images" / name, root / "images", root]
        split = _split_name(name)
        captions: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for ann in data["annotations"]:
            captions[ann.get("image_id")].append(ann)
        files = {image["id"]: image["file_name"] for image in data["images"]}
        for image_id in [i for i in captions if i not in files]:
            for ann in captions.pop(image_id):
                stats.skip("missing_image", f"{image_id}_{ann.get('id')}", f"image id {image_id} not in 'images'")
        for image_id, file_name in files.items():
            anns = captions.get(image_id, [])
            image, reason, detail = _decode(_resolve(file_name, roots)) if anns else (None, "", "")
            for n, ann in enumerate(anns):
                key = f"{image_id}_{ann.get('id', n)}"
                if image is None:
                    stats.skip(reason, key, detail)
                    continue
                text = _text(ann.get("caption"), key, stats)
                if text is not None:
                    yield Record(key, image, text, split=split, group=str(image_id))


def _llava_items(path: Path, stats: SkipStats) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.suffix == ".jsonl":
        yield from json_rows(path, stats)
        return
    items = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(items, list):
        raise ValueError(f"{path}: a LLaVA file is a JSON list of conversations")
    yield from enumerate(items)


def _read_llava(path: str | Path, stats: SkipStats) -> Iterator[Record]:
    for file in _files_of(Path(path), "llava"):
        yield from _llava_records(file, stats)


def _llava_records(path: Path, stats: SkipStats) -> Iterator[Record]:
    roots = [path.parent, path.parent / "images"]
    for index, item in _llava_items(path, stats):
        key = str(item.get("id", index)) if isinstance(item, dict) else str(index)
        try:
            turns = [(_ROLES.get(t["from"], str(t["from"])), t["value"]) for t in item["conversations"]]
        except (KeyError, TypeError) as err:
            stats.skip("bad_json", key, f"conversations need 'from' and 'value' ({err!r})")
            continue
        if any(not isinstance(t, str) for _, t in turns):
            stats.skip("bad_text", key, "a turn's value is not a string")
            continue
        text = _text(next((t for role, t in turns if role == "assistant"), None), key, stats)
        if text is None:
            continue
        image = None
        if item.get("image"):
            ref = item["image"][0] if isinstance(item["image"], list) else item["image"]  # first of several
            image = _image(_resolve(str(ref), roots), key, stats)
            if image is None:
                continue
        yield Record(key, image, text, turns=turns)


def _document_refs(doc: dict[str, Any]) -> list[tuple[str, Any]] | None:
    """Ordered ("text", str) / ("image", ref) pairs of an OBELICS or MMC4 document; None if neither."""
    if isinstance(doc.get("texts"), list) and isinstance(doc.get("images"), list):
        return [("image", i) if i else ("text", t) for t, i in zip(doc["texts"], doc["images"], strict=False)]
    if isinstance(doc.get("text_list"), list):
        before: dict[int, list[str]] = defaultdict(list)  # MMC4: an image goes before its matched sentence
        for info in doc.get("image_info") or []:
            before[int(info.get("matched_text_index", 0))].append(info.get("image_name"))
        refs: list[tuple[str, Any]] = []
        for i, sentence in enumerate(doc["text_list"]):
            refs += [("image", name) for name in before.pop(i, [])] + [("text", sentence)]
        return refs + [("image", name) for i in sorted(before) for name in before[i]]
    return None


def _read_interleaved(path: str | Path, stats: SkipStats) -> Iterator[Record]:
    path = Path(path)
    for file in _files_of(path, "interleaved"):
        roots = [file.parent, file.parent / "images"]
        for number, doc in json_rows(file, stats):
            key = str(doc.get("id") or doc.get("key") or f"{file.stem}-{number:06d}")
            refs = _document_refs(doc)
            if refs is None:
                stats.skip("bad_json", key, "needs texts+images (OBELICS) or text_list+image_info (MMC4)")
                continue
            segments: list[Segment] = []
            for kind, value in refs:
                if kind == "text" and isinstance(value, str) and value.strip():
                    segments.append(value.strip())
                elif kind == "image":
                    image = _image(_resolve(str(value), roots), key, stats)
                    if image is None:
                        break
                    segments.append(image)
            else:
                text = _text(" ".join(s for s in segments if isinstance(s, str)), key, stats)
                if text is not None:
                    image = next((s for s in segments if isinstance(s, np.ndarray)), None)
                    yield Record(key, image, text, segments=segments)


def _folder_rows(path: Path, stats: SkipStats) -> Iterator[tuple[str, Any, str | None]]:
    """(relative image file, caption, split) from metadata.jsonl/captions.jsonl or ``.txt`` sidecars."""
    listing = next((path / n for n in ("metadata.jsonl", "captions.jsonl") if (path / n).is_file()), None)
    if listing is not None:
        for number, row in json_rows(listing, stats):
            file = row.get("file_name", row.get("file"))
            if not isinstance(file, str):
                stats.skip("bad_json", f"{listing.name}:{number}", "row needs 'file_name' (or 'file')")
                continue
            yield file, row.get("text", row.get("caption")), row.get("split")
        return
    for image in sorted(p for p in path.rglob("*") if p.suffix.lower().lstrip(".") in IMAGE_EXTS):
        rel = image.relative_to(path)
        sidecar = image.with_suffix(".txt")
        caption = sidecar.read_bytes() if sidecar.is_file() else None
        split = _SPLIT_NAMES.get(rel.parts[0].lower()) if len(rel.parts) > 1 else None
        if caption is None:
            stats.skip("missing_text", rel.with_suffix("").as_posix(), f"no {sidecar.name}")
            continue
        yield rel.as_posix(), caption, split


def _read_imagefolder(path: str | Path, stats: SkipStats) -> Iterator[Record]:
    path = Path(path)
    for file, caption, split in _folder_rows(path, stats):
        key = Path(file).with_suffix("").as_posix()
        text = _text(caption, key, stats)
        if text is None:
            continue
        image = _image(path / file, key, stats)
        if image is not None:
            yield Record(key, image, text, split=split if split in SPLITS else None)


def _read_shape_edits(path: str | Path, stats: SkipStats) -> Iterator[Record]:
    path = Path(path)
    listing = path / "edits.jsonl" if path.is_dir() else path
    for number, row in json_rows(listing, stats):
        key = f"{listing.stem}-{number:06d}"
        files = row.get("source_file"), row.get("target_file")
        if not all(isinstance(f, str) for f in files):
            stats.skip("bad_json", key, "row needs 'source_file' and 'target_file'")
            continue
        text = _text(row.get("instruction"), key, stats)
        source = _image(listing.parent / files[0], key, stats) if text is not None else None
        target = _image(listing.parent / files[1], key, stats) if source is not None else None
        if target is not None:
            split = row.get("split") if row.get("split") in SPLITS else None
            yield Record(key, source, text, segments=[source, text, target], split=split)


def _read_mnist_idx(path: str | Path, stats: SkipStats) -> Iterator[Record]:
    files = find_canonical(path)
    if files is None:
        raise ValueError(f"{path}: no canonical IDX files (train-images-idx3-ubyte[.gz], ...)")
    names = files.class_names()
    templates = CaptionTemplates(names, "generic") if names else None
    for part in ("train", "test"):
        if (part, "images") not in files.files:
            continue
        images, labels = files.read_part(part)
        if images.ndim == 4 and images.shape[-1] not in (1, 3):
            raise ValueError(f"{files.files[(part, 'images')]}: {images.shape[-1]} channels; records hold grey or RGB")
        if names and labels.size and labels.max() >= len(names):
            raise ValueError(f"{files.root}: {len(names)} class names, but the labels go up to {labels.max()}")
        held = np.zeros(len(images), dtype=bool)
        if part == "train":
            held[val_indices(len(images))] = True
        for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
            key = f"{part}-{i:06d}"
            text = templates.caption(label, random.Random(key)) if templates else f"label {label}"
            split = "test" if part == "test" else "val" if held[i] else "train"
            yield Record(key, image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image, text, split=split)


_READERS: dict[str, Callable[[Any, SkipStats], Iterator[Record]]] = {
    "webdataset": _read_webdataset,
    "coco": _read_coco,
    "llava": _read_llava,
    "interleaved": _read_interleaved,
    "imagefolder": _read_imagefolder,
    "shape-edits": _read_shape_edits,
    "mnist-idx": _read_mnist_idx,
}


# ---------------------------------------------------------------------------------------- detect, open


def _files_of(path: Path, fmt: str) -> list[Path]:
    """``path`` itself, or the JSON/jsonl files directly in the dir ``path`` that look like ``fmt``."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.glob("*.json*") if _file_format(p) == fmt)
    if not files:
        raise ValueError(f"{path}: no {fmt} .json/.jsonl files")
    return files


def _jsonl_format(path: Path) -> str | None:
    with path.open(encoding="utf-8", errors="replace") as handle:
        line = next((line for line in handle if line.strip()), "")
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(row, dict):
        return None
    if "conversations" in row:
        return "llava"
    if {"texts", "images"} <= row.keys() or "text_list" in row:
        return "interleaved"
    if {"instruction", "source_file", "target_file"} <= row.keys():
        return "shape-edits"
    return None


def _json_format(path: Path) -> str | None:
    with path.open(encoding="utf-8", errors="replace") as handle:
        start = handle.read(4096).lstrip()[:1]
    return {"[": "llava", "{": "coco"}.get(start)


def _file_format(path: Path) -> str | None:
    name = path.name.lower()
    if is_canonical_name(path.name):
        return "mnist-idx"
    if name.endswith(TAR_SUFFIXES):
        return "webdataset"
    if name.endswith(".jsonl"):
        return _jsonl_format(path)
    if name.endswith(".json"):
        return _json_format(path)
    return None


def detect_format(path: str | Path) -> str:
    """The format of ``path`` (one of ``FORMATS``); ``ValueError`` if it cannot be told."""
    if "{" in str(path) and ".tar" in str(path):
        return "webdataset"
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file():
        fmt = _file_format(path)
    elif find_canonical(path) is not None:
        fmt = "mnist-idx"
    elif any(p.name.lower().endswith(TAR_SUFFIXES) for p in path.rglob("*")):
        fmt = "webdataset"
    elif list((path / "annotations").glob("captions_*.json")) or list(path.glob("captions_*.json")):
        fmt = "coco"
    elif (path / "edits.jsonl").is_file():
        fmt = "shape-edits"
    elif (path / "metadata.jsonl").is_file() or (path / "captions.jsonl").is_file():
        fmt = "imagefolder"
    else:
        found = {_file_format(p) for p in path.glob("*.json*")} - {None}
        images = any(p.suffix.lower().lstrip(".") in IMAGE_EXTS for p in path.rglob("*"))
        fmt = found.pop() if len(found) == 1 else "imagefolder" if images and not found else None
    if fmt is None:
        raise ValueError(f"{path}: cannot tell its format; pass --format (one of {', '.join(FORMATS)})")
    return fmt


def counted(records: Iterable[Record], stats: SkipStats) -> Iterator[Record]:
    """Pass ``records`` through, counting each as kept and checking the skipped fraction at the end."""
    for record in records:
        stats.keep()
        yield record
    stats.check(final=True)


@dataclass
class Source:
    """An opened dataset: iterate for ``Record``s; ``stats`` holds the counts of the latest pass."""

    path: str | Path
    format: str
    max_skip_fraction: float = 0.01
    min_seen: int = 100
    stats: SkipStats = field(init=False)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; expected one of {', '.join(FORMATS)}")
        self.stats = self._new_stats()

    def _new_stats(self) -> SkipStats:
        return SkipStats(str(self.path), self.max_skip_fraction, self.min_seen)

    def __iter__(self) -> Iterator[Record]:
        self.stats = self._new_stats()
        return counted(_READERS[self.format](self.path, self.stats), self.stats)


def open_source(
    path: str | Path, fmt: str | None = None, max_skip_fraction: float = 0.01, min_seen: int = 100
) -> Source:
    """Open ``path`` as ``fmt`` (detected when None); iterating the result streams its records."""
    return Source(path, fmt or detect_format(path), max_skip_fraction, min_seen)
