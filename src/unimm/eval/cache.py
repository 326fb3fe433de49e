"""The evaluator cache: networks trained in-project, stored once per (dataset content, recipe).

A file is ``cache_dir/<kind>-<key>.safetensors`` where the key hashes every file of the dataset and the
recipe's settings, so a changed dataset or recipe trains afresh and an unchanged one loads; the
metadata carries what is needed to rebuild the network and its held-out accuracy.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from unimm.checkpoint import atomic_write


def default_cache() -> Path:
    """``$UNIMM_CACHE`` (default ``~/.cache/unimm``): evaluator networks shared across runs and commands."""
    return Path(os.environ.get("UNIMM_CACHE", "~/.cache/unimm")).expanduser()


def dataset_fingerprint(path: str | Path) -> str:
    """SHA-256 over the relative names and bytes of every file in the dataset directory."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def cache_path(kind: str, data_path: str | Path, settings: dict[str, Any], cache_dir: str | Path) -> Path:
    """Where the ``kind`` evaluator of this dataset and recipe lives."""
    key = hashlib.sha256((dataset_fingerprint(data_path) + json.dumps(settings, sort_keys=True)).encode())
    return Path(cache_dir).expanduser() / f"{kind}-{key.hexdigest()[:20]}.safetensors"


def save_evaluator(path: Path, module: nn.Module, meta: dict[str, str]) -> None:
    """Write the module's weights with string metadata, atomically."""
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def read_evaluator(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(weights, metadata) of a cached evaluator."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    return state, meta
