"""The three tasks of a unified model as span layouts (see ``sequence.py``).

- text-to-image: ``<bos> caption <boi> image <eoi> <eos>``; the caption is dropped (only
  ``<bos>``) for classifier-free guidance, and the image gets the image objective's loss.
- caption: ``<bos> <boi> image <eoi> caption <eos>``; loss on the caption.
- vqa: ``<bos> <boi> image <eoi> question <sep> answer <eos>``; loss on the answer.
The same layouts, cut before the part to produce, are the prompts used by sampling.
"""

from dataclasses import dataclass
from typing import Literal

import torch

from unimm.sequence import ImageSpan, TextSpan
from unimm.tokenizers.text import TextTokenizer

Task = Literal["t2i", "caption", "vqa"]


@dataclass
class Example:
    task: Task
    text: str = ""  # caption (t2i / caption) or question (vqa)
    answer: str = ""
    drop_condition: bool = False  # t2i only: train the unconditional branch for CFG


def training_spans(
    ex: Example, patches: torch.Tensor, grid: tuple[int, int], tok: TextTokenizer
) -> list[TextSpan | ImageSpan]:
    if ex.task == "t2i":
        prompt = [] if ex.drop_condition else tok.encode(ex.text)
        return [
            TextSpan([tok.bos_id, *prompt]),
            ImageSpan(patches, grid, generate=True),
            TextSpan([tok.eos_id]),
        ]
    spans = understanding_prompt(patches, grid, tok, ex.text if ex.task == "vqa" else None)
    target = ex.answer if ex.task == "vqa" else ex.text
    return [*spans, TextSpan([*tok.encode(target), tok.eos_id])]


def generation_prompt(
    prompt: str | None, patches: torch.Tensor, grid: tuple[int, int], tok: TextTokenizer
) -> list[TextSpan | ImageSpan]:
    """``prompt=None`` is the unconditional branch of classifier-free guidance."""
    ids = [] if prompt is None else tok.encode(prompt)
    return [TextSpan([tok.bos_id, *ids]), ImageSpan(patches, grid, generate=True)]


def understanding_prompt(
    patches: torch.Tensor, grid: tuple[int, int], tok: TextTokenizer, question: str | None = None
) -> list[TextSpan | ImageSpan]:
    spans: list[TextSpan | ImageSpan] = [TextSpan([tok.bos_id], loss=False), ImageSpan(patches, grid)]
    if question:
        spans.append(TextSpan([*tok.encode(question), tok.sep_id], loss=False))
    return spans
