"""Understanding metrics: caption / answer held-out images and parse the class back out of the text."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from unimm.data import CaptionTemplates, ImageTextData


class Captioner(Protocol):
    def caption(self, images: torch.Tensor, question: str | None = None) -> list[str]: ...


def _labelled_text_accuracy(
    model: Captioner,
    data: ImageTextData,
    templates: CaptionTemplates,
    question: str | None,
    n: int | None,
    batch_size: int,
    n_examples: int,
    progress: bool,
) -> dict[str, Any]:
    keep = torch.nonzero(data.labels >= 0).flatten()[:n]
    if len(keep) == 0:
        raise ValueError(f"dataset {data.name!r} has no labelled images to evaluate")
    texts: list[str] = []
    desc = "vqa" if question else "caption"
    for i in tqdm(range(0, len(keep), batch_size), disable=not progress, desc=desc, unit="batch"):
        idx = keep[i : i + batch_size]
        texts += model.caption(data.images[idx], question=question)
    labels = data.labels[keep].tolist()
    parsed = [templates.parse(t) for t in texts]
    hits = [p == y for p, y in zip(parsed, labels, strict=True)]
    per_class = [
        sum(h for h, y in zip(hits, labels, strict=True) if y == k) / max(1, labels.count(k))
        for k in range(templates.num_classes)
    ]
    examples = [
        {"index": int(keep[j]), "label": labels[j], "text": texts[j], "parsed": parsed[j]}
        for j in range(min(n_examples, len(texts)))
    ]
    return {
        "accuracy": sum(hits) / len(hits),
        "n": len(hits),
        "unparsed": parsed.count(-1),
        "per_class_accuracy": per_class,
        "examples": examples,
    }


def caption_accuracy(
    model: Captioner,
    data: ImageTextData,
    templates: CaptionTemplates,
    n: int | None = None,
    batch_size: int = 100,
    n_examples: int = 8,
    progress: bool = False,
) -> dict[str, Any]:
    """Caption the first ``n`` labelled images (all when None) and count captions naming the true class.

    Returns ``caption_accuracy``, ``n``, ``unparsed`` (captions naming no single class),
    ``per_class_accuracy`` and ``examples``: the first ``n_examples`` as {index, label, text, parsed}.
    """
    out = _labelled_text_accuracy(model, data, templates, None, n, batch_size, n_examples, progress)
    return {"caption_accuracy": out.pop("accuracy"), **out}


def vqa_accuracy(
    model: Captioner,
    data: ImageTextData,
    templates: CaptionTemplates,
    question: str | None = None,
    n: int | None = None,
    batch_size: int = 100,
    n_examples: int = 8,
    progress: bool = False,
) -> dict[str, Any]:
    """Ask ``question`` (default: the templates' first question, "what digit is this?" for digits) about
    each image and count answers naming the true class; keys as ``caption_accuracy`` with ``vqa_accuracy``
    and ``question``."""
    question = question or templates.question_templates[0][0]
    out = _labelled_text_accuracy(model, data, templates, question, n, batch_size, n_examples, progress)
    return {"vqa_accuracy": out.pop("accuracy"), "question": question, **out}
