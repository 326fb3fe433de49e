"""Data: on-disk formats, caption templates, generated shapes and in-memory splits."""

from unimm.data.captions import CaptionTemplates
from unimm.data.datasets import ImageTextData, convert_channels, load_split, resize, templates_for
from unimm.data.formats import (
    SPLITS,
    FolderWriter,
    iter_folder_rows,
    make_meta,
    read_idx,
    read_idx_split,
    read_meta,
    read_png,
    write_idx,
    write_idx_split,
    write_meta,
)
from unimm.data.shapes import ShapeObject, ShapeScene, detect_objects, parse_caption, relation_holds

__all__ = [
    "SPLITS",
    "CaptionTemplates",
    "FolderWriter",
    "ImageTextData",
    "ShapeObject",
    "ShapeScene",
    "convert_channels",
    "detect_objects",
    "iter_folder_rows",
    "load_split",
    "make_meta",
    "parse_caption",
    "read_idx",
    "read_idx_split",
    "read_meta",
    "read_png",
    "relation_holds",
    "resize",
    "templates_for",
    "write_idx",
    "write_idx_split",
    "write_meta",
]
