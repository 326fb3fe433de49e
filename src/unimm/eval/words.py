"""Word-level text normalisation shared by the in-project CLIP and the caption metrics."""

from __future__ import annotations

import re

_PUNCTUATION = re.compile(r"[^\w\s]+")


def words(text: str) -> list[str]:
    """Lowercase ``text``, turn punctuation into spaces and split: ``"Keycap: *"`` -> ``["keycap"]``."""
    return _PUNCTUATION.sub(" ", text.lower()).split()
