"""Atomic file writes and safe loading of weights and training state.

Every write goes to a temporary file in the same directory, is flushed to disk, then renamed
over the target with ``os.replace``: a reader sees the old file or the new one, never half of one.
"""

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then move the result onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_weights(state: dict[str, torch.Tensor], path: str | Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(state, tmp))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is corrupt or truncated ({err}); nothing was loaded") from None


def save_state(state: dict[str, Any], path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path) -> dict[str, Any]:
    """Training state (optimizer, scheduler, step), read with ``weights_only=True``: no pickled code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found or "Weights only load failed" in str(err):
            what = f" (it names {found.group(1)})" if found else ""
            raise ValueError(
                f"refusing to load {path}: it holds pickled Python objects other than tensors and plain values"
                f"{what}, which could run code; a unimm training state never does"
            ) from None
        raise ValueError(f"{path} is corrupt, truncated or not a unimm training state ({err})") from None
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path} is corrupt, truncated or not a unimm training state ({err})") from None
