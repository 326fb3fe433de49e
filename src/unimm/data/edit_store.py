"""An edit dataset (``data/edits.py``: source, instruction, target) as the ``ImageTextData`` training reads.

The targets are the items' ``images`` with their scenes' exact captions (so the same split also trains
text-to-image and captioning on them, ``data.edit_fraction``); ``sources`` and ``instructions`` hold the
rest of each edit. No labels: every label is -1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from unimm.data.datasets import ImageTextData, _to_nchw
from unimm.data.edits import EDITS_FILE, OPEN_PLACE_KINDS, load_edits
from unimm.data.formats import META_FILE, load_meta_json
from unimm.data.shapes import ShapeScene

EDITS_FORMAT = "edits"  # meta.json's format, as ``write_edits`` writes it
BLANK_CAPTION = "a blank image"  # the target of removing a lone object


def is_edit_dataset(root: str | Path) -> bool:
    """A folder ``write_edits`` made: its meta.json says format ``edits`` and ``edits.jsonl`` is there."""
    root = Path(root)
    if not (root / META_FILE).is_file() or not (root / EDITS_FILE).is_file():
        return False
    meta = load_meta_json(root / META_FILE)
    return isinstance(meta, dict) and meta.get("format") == EDITS_FORMAT


def scene_caption(scene: ShapeScene) -> str:
    """The scene's exact caption; ``BLANK_CAPTION`` for a scene without objects."""
    return scene.caption() if scene.objects else BLANK_CAPTION


def load_edit_data(root: str | Path, split: str) -> ImageTextData:
    """One split of an edit dataset; ``ValueError`` when the split has no edits."""
    edits, meta = load_edits(root, split), load_meta_json(Path(root) / META_FILE)
    if not edits:
        raise ValueError(f"{Path(root) / EDITS_FILE}: no edits in split {split!r}")
    return ImageTextData(
        images=_to_nchw(np.stack([e.target for e in edits])),
        labels=torch.full((len(edits),), -1, dtype=torch.long),
        captions=[scene_caption(e.edit.target) for e in edits],
        class_names=None,
        caption_kind=meta.get("caption_kind", "edit"),
        name=meta.get("name", Path(root).name),
        sources=_to_nchw(np.stack([e.source for e in edits])),
        instructions=[e.edit.instruction for e in edits],
        source_objects=[len(e.edit.source.objects) for e in edits],
        edit_kinds=[e.edit.kind for e in edits],
        open_places=[e.edit.kind in OPEN_PLACE_KINDS for e in edits],
    )
