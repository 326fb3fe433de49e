"""MNIST-style datasets as they are distributed: canonical IDX files, gzipped or not.

A directory holds ``train-images-idx3-ubyte`` + ``train-labels-idx1-ubyte`` and, for the test split,
``t10k-images-idx3-ubyte`` + ``t10k-labels-idx1-ubyte``. Also accepted: ``test`` for ``t10k``, a ``.``
before ``idx`` (``train-images.idx3-ubyte``), a ``.gz`` suffix and a ``<name>-`` prefix (EMNIST's
``emnist-letters-train-images-idx3-ubyte.gz``); when a file is there both plain and gzipped, the plain one is read.

Splits: test = the t10k files; val = a seeded random ``VAL_FRACTION`` of the train files (seed
``VAL_SEED``, so the same files always give the same split); train = the rest, in file order.
Class names (line i names label i) come from ``classes.txt`` beside the files; ``load_split`` lets
``data.class_names`` override them. Nothing is guessed: ten labels may be digits, clothes or letters.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unimm.data.formats import decode_idx

CLASSES_FILE = "classes.txt"
VAL_FRACTION = 1 / 12  # MNIST: 5,000 of the 60,000 train images, the usual held-out set
VAL_SEED = 0
_NAME = re.compile(
    r"^(?:(?P<prefix>.+)-)?(?P<part>train|t10k|test)-(?P<kind>images|labels)[-.]idx\d-ubyte(?P<gz>\.gz)?$"
)
_PARTS = {"train": "train", "t10k": "test", "test": "test"}


def is_canonical_name(name: str) -> bool:
    """Whether ``name`` is a canonical IDX file name (``train-images-idx3-ubyte.gz``, ...)."""
    return _NAME.match(name) is not None


def read_ubyte(path: str | Path) -> np.ndarray:
    """One IDX file (gunzipped first when its name ends in ``.gz``); ``ValueError`` naming a corrupt file."""
    path = Path(path)
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: not a readable gzip file ({err})") from err
    return decode_idx(data, name=str(path))


def val_indices(n: int, fraction: float = VAL_FRACTION, seed: int = VAL_SEED) -> np.ndarray:
    """Sorted indices of the ``round(n * fraction)`` train-file images held out as val."""
    return np.sort(np.random.default_rng(seed).permutation(n)[: round(n * fraction)])


@dataclass(frozen=True)
class CanonicalFiles:
    """The canonical IDX files of one dataset: ``files[(part, kind)]`` with part train/test, kind images/labels."""

    root: Path
    name: str
    files: dict[tuple[str, str], Path]

    def read_part(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images ``[N,H,W(,C)]``, int64 labels ``[N]``) of the train or test files."""
        if (part, "images") not in self.files:
            raise ValueError(f"{self.root}: no {part} files (t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)")
        image_path, label_path = self.files[(part, "images")], self.files[(part, "labels")]
        images, labels = read_ubyte(image_path), read_ubyte(label_path)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"{image_path}: expected uint8 images [N,H,W(,C)], got {images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images) or labels.dtype.kind not in "iu":
            raise ValueError(f"{label_path}: expected {len(images)} integer labels, got {labels.dtype} {labels.shape}")
        return images, labels.astype(np.int64)

    def read_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """One split: test = the test files, val = ``val_indices`` of the train files, train = the rest."""
        if split == "test":
            return self.read_part("test")
        images, labels = self.read_part("train")
        held = np.zeros(len(images), dtype=bool)
        held[val_indices(len(images))] = True
        keep = held if split == "val" else ~held
        return images[keep], labels[keep]

    def class_names(self) -> list[str] | None:
        """Names from ``classes.txt`` (one per line, blank lines ignored), None if there is no such file."""
        path = self.root / CLASSES_FILE
        if not path.is_file():
            return None
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not names:
            raise ValueError(f"{path}: no class names in it (one name per line, line i names label i)")
        return names

    def require_class_names(self) -> list[str]:
        """``class_names()``, or a ``ValueError`` that says how to name the classes."""
        names = self.class_names()
        if names is None:
            raise ValueError(
                f"{self.root}: no {CLASSES_FILE}, so the labels have no names to caption with; write one name per "
                f"line (line i names label i) to {self.root / CLASSES_FILE}, e.g. for digits: "
                f"printf '%s\\n' zero one two three four five six seven eight nine > {self.root / CLASSES_FILE}"
            )
        return names


def find_canonical(path: str | Path) -> CanonicalFiles | None:
    """The canonical IDX files in the directory ``path`` (or beside the file ``path``); None if there are none.

    ``ValueError`` when the files are incomplete (images without labels, no train files) or hold several
    datasets (prefixes).
    """
    root = Path(path)
    root = root.parent if root.is_file() else root
    if not root.is_dir():
        return None
    found: dict[str, dict[tuple[str, str], Path]] = {}
    for file in sorted(root.iterdir()):
        match = _NAME.match(file.name)
        if match is None or not file.is_file():
            continue
        key = (_PARTS[match["part"]], match["kind"])
        files = found.setdefault(match["prefix"] or "", {})
        if key not in files or files[key].name.endswith(".gz"):  # a plain file wins over its gzipped copy
            files[key] = file
    if not found:
        return None
    if len(found) > 1:
        names = ", ".join(repr(p or "(no prefix)") for p in sorted(found))
        raise ValueError(f"{root}: canonical IDX files of several datasets ({names}); keep one per directory")
    prefix, files = found.popitem()
    for part in ("train", "test"):
        kinds = {kind for p, kind in files if p == part}
        if kinds == {"images"} or kinds == {"labels"}:
            missing = "labels" if kinds == {"images"} else "images"
            raise ValueError(f"{root}: {part} {next(iter(kinds))} without {part} {missing} (an idx file of each)")
    if ("train", "images") not in files:
        raise ValueError(f"{root}: canonical IDX test files but no train-images-idx3-ubyte / train-labels-idx1-ubyte")
    return CanonicalFiles(root, prefix or root.resolve().name, files)
