"""A record's turns (LLaVA) or segments (an interleaved document) kept as a conversation: the turns in order, each
a role and its text pieces and images, which training lays out as one sequence (``tasks.conversation_spans``).

- LLaVA: ``human`` -> user, ``gpt`` -> assistant, ``system`` -> user (read, as a prompt is). The image goes where
  the first ``<image>`` tag is (in whichever turn: an assistant's is an image the model draws); without a tag it
  opens the first user turn, as LLaVA's training does. Further tags are dropped (the reader keeps one image).
- A document (OBELICS, MMC4): its first ``prompt`` segments are a user turn (read), the rest one assistant turn,
  produced in order ("the next segments of a document": text by the text loss, images generated). A document of
  no more than ``prompt`` segments is produced whole. A converted ``shape-edits`` source (source image,
  instruction, target image) reads two (``PROMPT_SEGMENTS``): the target is produced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from unimm.data.sources import Record

Part = str | torch.Tensor  # a text piece, or an image [C, H, W] in [-1, 1]
Conversation = tuple[tuple[str, tuple[Part, ...]], ...]  # (role "user" | "assistant", parts in order) per turn
IMAGE_TAG = "<image>"
ROLES = {"user": "user", "system": "user", "assistant": "assistant"}
PROMPT_SEGMENTS = {"shape-edits": 2}  # a source format's segments read before the produced ones (default 1)

ToTensor = Callable[[np.ndarray], torch.Tensor]


def llava_conversation(turns: Sequence[tuple[str, str]], image: torch.Tensor | None) -> Conversation:
    """``(role, text)`` turns with ``image`` at the first ``<image>`` tag (or opening the first user turn)."""
    placed = image is None or not any(IMAGE_TAG in text for _, text in turns)
    out = []
    for role, text in turns:
        if role not in ROLES:
            raise ValueError(f"a turn's role is user, assistant or system, got {role!r}")
        parts: list[Part] = []
        for n, piece in enumerate(text.split(IMAGE_TAG)):
            if n and not placed:
                parts.append(image)
                placed = True
            if piece.strip():
                parts.append(piece.strip())
        out.append((ROLES[role], tuple(parts)))
    if image is not None and not any(IMAGE_TAG in text for _, text in turns):
        first = next((n for n, (role, _) in enumerate(out) if role == "user"), None)
        if first is None:
            out.insert(0, ("user", (image,)))
        else:
            out[first] = ("user", (image, *out[first][1]))
    return tuple(out)


def document_conversation(segments: Sequence[Part], prompt: int = 1) -> Conversation:
    """A document's segments: the first ``prompt`` read (a user turn), the rest produced (an assistant turn)."""
    if not segments:
        raise ValueError("a document needs at least one segment")
    if len(segments) <= prompt:
        return (("assistant", tuple(segments)),)
    return (("user", tuple(segments[:prompt])), ("assistant", tuple(segments[prompt:])))


def record_conversation(record: Record, to_tensor: ToTensor, prompt: int = 1) -> Conversation | None:
    """``record``'s document (its segments) or conversation (its turns) with its images made tensors by
    ``to_tensor``; None for a record with neither (a caption)."""
    if record.segments is not None:
        return document_conversation([s if isinstance(s, str) else to_tensor(s) for s in record.segments], prompt)
    if record.turns:
        return llava_conversation(record.turns, None if record.image is None else to_tensor(record.image))
    return None


def conversation_texts(conversation: Conversation) -> list[str]:
    """Every text piece of ``conversation``, in order."""
    return [p for _, parts in conversation for p in parts if isinstance(p, str)]


def conversation_images(conversation: Conversation) -> list[torch.Tensor]:
    """Every image of ``conversation``, in order."""
    return [p for _, parts in conversation for p in parts if isinstance(p, torch.Tensor)]
