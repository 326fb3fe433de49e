"""Load one split of a dataset dir (IDX, captioned folder, shards, canonical IDX files or a video dataset) into
tensors: images ``[N, C, H, W]``, or clips ``[N, T, C, H, W]`` for a video dataset (``data/clips.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unimm.data.canonical import CLASSES_FILE, CanonicalFiles, find_canonical
from unimm.data.captions import CaptionTemplates
from unimm.data.clips import frames_of, like_media, media_frames
from unimm.data.conversations import Conversation
from unimm.data.formats import META_FILE, SPLITS, iter_folder_rows, read_idx_split, read_meta, read_png

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights for RGB -> grey


@dataclass
class ImageTextData:
    """One split in memory.

    ``images`` float32 ``[N,C,H,W]`` in [-1, 1] (a video dataset's clips: ``[N,T,C,H,W]``); ``labels`` long
    ``[N]`` (-1 if unlabelled); ``captions`` the stored captions of a folder or video dataset, None for IDX
    sets (captions come from ``templates_for``); ``qa`` each item's own (question, answer) pairs where the
    dataset stores them (video), else None (questions come from the templates). An edit dataset
    (``edit_store.py``) adds each item's ``sources`` ``[N,C,H,W]`` and ``instructions``: ``images`` are then the
    edits' targets and ``captions`` theirs. A dataset converted from LLaVA conversations or interleaved documents
    keeps each item's turns in ``conversations`` (``data/conversations.py``; None for an item without, and for
    other datasets): ``images`` then hold each item's first image and ``captions`` its ``Record.text``. An edit
    dataset also counts the objects of each edit's source scene (``source_objects``, ``data.multi_object_repeat``),
    names each edit's kind (``edit_kinds``, ``data.edit_kind_repeat``)
    and says which edits leave the place of what they draw open (``open_places``: adds; ``tasks.changed_cells``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    captions: list[str] | None
    class_names: list[str] | None
    caption_kind: str
    name: str
    qa: list[list[tuple[str, str]]] | None = None
    sources: torch.Tensor | None = None
    instructions: list[str] | None = None
    conversations: list[Conversation | None] | None = None
    source_objects: list[int] | None = None
    edit_kinds: list[str] | None = None
    open_places: list[bool] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def frames(self) -> int | None:
        """Frames per clip, None for images (``data.frames``)."""
        return media_frames(self.images)

    def all_qa(self) -> list[tuple[str, str]]:
        """Every distinct stored (question, answer) pair, in order of first appearance."""
        return list(dict.fromkeys(pair for pairs in self.qa or [] for pair in pairs))

    def stored_texts(self) -> list[str]:
        """Every stored caption, question and answer (what a text tokenizer must know besides the templates)."""
        qa = (text for pair in self.all_qa() for text in pair)
        return [*(self.captions or []), *qa, *(self.instructions or [])]


def _to_nchw(arrays: np.ndarray) -> torch.Tensor:
    """uint8 ``[N,H,W]`` or ``[N,H,W,C]`` -> float32 ``[N,C,H,W]`` in [-1, 1]."""
    if arrays.ndim == 3:
        arrays = arrays[..., None]
    images = torch.from_numpy(np.ascontiguousarray(arrays)).permute(0, 3, 1, 2).float()
    return images / 127.5 - 1.0


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey <-> RGB for ``[N,C,H,W]`` images or ``[N,T,C,H,W]`` clips (RGB -> grey by luminance)."""
    have = images.shape[-3]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(*images.shape[:-3], 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = images.new_tensor(_LUMA).view(3, 1, 1)
        return (images * weights).sum(dim=-3, keepdim=True)
    raise ValueError(f"cannot convert {have} channels to {channels}")


def resize(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Bilinear, antialiased resize of ``[N,C,H,W]`` images (or each frame of ``[N,T,C,H,W]`` clips) to
    ``image_size`` x ``image_size``."""
    if images.shape[-2:] == (image_size, image_size):
        return images
    size = (image_size, image_size)
    out = F.interpolate(frames_of(images), size=size, mode="bilinear", antialias=True, align_corners=False)
    return like_media(out.clamp(-1.0, 1.0), images)


def _load_folder(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rows = list(iter_folder_rows(root, split))
    if not rows:
        raise ValueError(f"{root / 'captions.jsonl'}: no rows in split {split!r}")
    pixels = [read_png(root / row["file"]) for row in rows]
    shapes = {p.shape for p in pixels}
    if len(shapes) != 1:
        raise ValueError(f"{root}: images of split {split!r} differ in size/channels {sorted(shapes)}")
    labels = np.array([int(row.get("label", -1)) for row in rows], dtype=np.int64)
    return np.stack(pixels), labels, [row["caption"] for row in rows]


BUILT_IN = (
    "mnist",
    "digits",
    "emoji",
    "shapes",
    "moving_mnist",
)  # what ``python -m unimm.data.prepare`` writes, by name


def _create_hint(root: Path) -> str:
    """How to make the dataset a missing ``root`` names: prepare it if it is a built-in one, else convert."""
    if root.name in BUILT_IN:
        return f"create it with `python -m unimm.data.prepare --out {root.parent} --only {root.name}` (or `make data`)"
    return (
        f"convert your data with `unimm data convert SOURCE {root}`, or use a built-in dataset "
        f"(`make data` writes data/{{{','.join(BUILT_IN)}}})"
    )


def check_class_names(names: list[str], labels: torch.Tensor, where: str) -> list[str]:
    """``names`` if they name every label in ``labels``; ``ValueError`` naming ``where`` otherwise."""
    top = int(labels.max()) if labels.numel() else -1
    if top >= len(names):
        raise ValueError(f"{where}: {len(names)} class names, but the labels go up to {top} (one name per label)")
    return list(names)


def load_split(
    path: str | Path,
    split: str,
    image_size: int | None = None,
    channels: int | None = None,
    class_names: list[str] | None = None,
) -> ImageTextData:
    """Read ``split`` of the dataset at ``path``, resizing/converting if asked.

    The format comes from ``meta.json`` (IDX, folder or shards), or from the names of canonical IDX files
    (``train-images-idx3-ubyte[.gz]``, ... see ``canonical.py``). ``class_names`` (``data.class_names``)
    replace the dataset's own (``meta.json``, ``classes.txt``).
    """
    root = Path(path)
    canonical = None if (root / META_FILE).is_file() else find_canonical(root)
    if canonical is None and not (root / META_FILE).is_file():
        raise FileNotFoundError(
            f"dataset not found at {root} (no {META_FILE}, no train-images-idx3-ubyte[.gz]); {_create_hint(root)}, "
            "or point data.path at a directory of canonical IDX files"
        )
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    from unimm.data.edit_store import is_edit_dataset, load_edit_data  # here: edit_store imports this module
    from unimm.data.shards import is_shard_dataset, load_shard_split  # here: shards imports this module
    from unimm.data.video_store import is_video_dataset, load_video_data  # here: video_store imports this module

    if is_video_dataset(root) or is_edit_dataset(root):
        data = load_video_data(root, split) if is_video_dataset(root) else load_edit_data(root, split)
        if channels is not None:
            data.images = convert_channels(data.images, channels)
            data.sources = None if data.sources is None else convert_channels(data.sources, channels)
        if image_size is not None:
            data.images = resize(data.images, image_size)
            data.sources = None if data.sources is None else resize(data.sources, image_size)
    elif is_shard_dataset(root):  # images may differ in size: each is converted and resized on its own
        data = load_shard_split(root, split, image_size, channels)
    else:
        data = _load_canonical(canonical, split) if canonical is not None else _load_with_meta(root, split)
        if channels is not None:
            data.images = convert_channels(data.images, channels)
        if image_size is not None:
            data.images = resize(data.images, image_size)
    if class_names is not None:
        data.class_names = check_class_names(class_names, data.labels, f"data.class_names for {root}")
    return data


def _load_canonical(files: CanonicalFiles, split: str) -> ImageTextData:
    pixels, labels = files.read_split(split)
    names = files.class_names()
    labels_t = torch.from_numpy(labels).long()
    if names is not None:
        names = check_class_names(names, labels_t, str(files.root / CLASSES_FILE))
    return ImageTextData(_to_nchw(pixels), labels_t, None, names, "generic", files.name)


def _load_with_meta(root: Path, split: str) -> ImageTextData:
    meta = read_meta(root)
    captions: list[str] | None = None
    if meta["format"] == "idx":
        pixels, labels = read_idx_split(root, split)
    else:
        pixels, labels, captions = _load_folder(root, split)
    return ImageTextData(
        images=_to_nchw(pixels),
        labels=torch.from_numpy(labels).long(),
        captions=captions,
        class_names=meta.get("class_names"),
        caption_kind=meta.get("caption_kind", "generic"),
        name=meta.get("name", root.name),
    )


def templates_for(data: ImageTextData) -> CaptionTemplates:
    """Caption/VQA templates for a labelled dataset; ``ValueError`` if it has no class names."""
    if not data.class_names:
        raise ValueError(
            f"dataset {data.name!r} has no class_names, so it has no caption templates; name the labels in "
            f"data.class_names (or, for canonical IDX files, in a {CLASSES_FILE} beside them: line i names label i)"
        )
    return CaptionTemplates(data.class_names, data.caption_kind)
