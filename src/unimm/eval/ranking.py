"""Understanding measured without the caption format: rank every class's captions by their likelihood after
the image (``UnifiedModel.score_texts``) instead of parsing a generated caption.

A class's score is the log of the mean probability of its template captions,
``log (1/K) sum_k p(caption_{c,k} | image)``: with the templates drawn uniformly in training, as they are, a
perfect model gives exactly ``log p(c | image) - log K``, so the arg-max is the Bayes classifier. A model that
names the class in a format the parser does not read (or never learned the templates' wording well enough
to generate them) still ranks its classes.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from unimm.data import CaptionTemplates


class TextScorer(Protocol):
    """What ranking needs of a model (``UnifiedModel`` has both)."""

    def score_texts(
        self,
        images: torch.Tensor,
        texts: list[str],
        question: str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...

    def text_token_counts(self, texts: list[str]) -> list[int]: ...


def class_scores(scores: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """scores [N, T] of texts -> [N, C]: for each class (the text indices of ``groups[c]``) the log of the mean
    probability of its texts."""
    return torch.stack([torch.logsumexp(scores[:, g], 1) - math.log(len(g)) for g in groups], 1)


def rank_classes(
    model: TextScorer,
    images: torch.Tensor,
    labels: torch.Tensor,
    templates: CaptionTemplates,
    batch_size: int,
    seed: int,
    progress: bool = False,
) -> dict[str, Any]:
    """Rank the class captions of ``images`` (labels [N] >= 0): ``rank_accuracy`` (top-1), ``caption_nll`` (nats
    per scored token of the true class's captions, token-weighted over images and templates: for masked text an
    upper bound, from the ELBO), ``rank_n`` and ``rank_samples_per_s`` (images scored per second). Every batch
    is scored with a generator seeded with ``seed``, so the numbers do not depend on the batch size. A model that
    cannot score texts gets both metrics None and ``rank_note`` saying why."""
    captions = [templates.all_captions(c) for c in range(templates.num_classes)]
    texts = [t for group in captions for t in group]
    owner = torch.tensor([c for c, group in enumerate(captions) for _ in group])
    groups = [torch.nonzero(owner == c).flatten().tolist() for c in range(templates.num_classes)]
    t0 = time.perf_counter()
    try:
        chunks = [
            model.score_texts(images[i : i + batch_size], texts, generator=torch.Generator().manual_seed(seed)).cpu()
            for i in tqdm(range(0, len(images), batch_size), disable=not progress, desc="rank", unit="batch")
        ]
    except NotImplementedError as err:
        return {"rank_accuracy": None, "caption_nll": None, "rank_n": len(images), "rank_note": str(err)}
    scores = torch.cat(chunks).double()
    own = owner[None] == labels[:, None]  # [N, T]: the texts of each image's own class
    tokens = torch.tensor(model.text_token_counts(texts), dtype=torch.float64)
    predicted = class_scores(scores, groups).argmax(1)
    return {
        "rank_accuracy": float((predicted == labels).double().mean()),
        "caption_nll": float(-(scores * own).sum() / (tokens * own).sum()),
        "rank_n": len(images),
        "rank_samples_per_s": len(images) / (time.perf_counter() - t0),
    }
