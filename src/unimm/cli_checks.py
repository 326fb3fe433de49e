"""Cheap checks the commands run before any expensive work: can the output path be written?"""

from __future__ import annotations

import os
from pathlib import Path

from unimm.io import image_format


def _nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor (``path`` made absolute)."""
    path = path.absolute()
    return next((p for p in (path, *path.parents) if p.exists()), Path(path.anchor))


def check_out_dir(path: Path, option: str = "--out") -> None:
    """``ValueError`` unless ``path`` is a writable directory or one that can be made."""
    base = _nearest_existing(path)
    if not base.is_dir():
        where = "" if base == path.absolute() else f": {base} is a file, so no directory can be made under it"
        raise ValueError(f"{option} {path} must be a directory{where or ', but it is a file'}")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {base} is not writable")


def check_out_image(path: Path, option: str = "--out") -> None:
    """``ValueError`` unless ``path`` is an image file (its suffix naming a format PIL writes) in a directory
    that is writable or can be made."""
    if path.is_dir():
        raise ValueError(f"{option} {path} is a directory; name an image file such as grid.png")
    image_format(path)
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise ValueError(f"{option} {path}: {base} is a file, so {path.name} cannot be written under it")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {base} is not writable")
