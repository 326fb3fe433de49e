"""Caption metrics for free text: BLEU-1..4, CIDEr-D and ROUGE-L from pycocoevalcap's scorers.

pycocoevalcap's usual front end, the PTB tokenizer, runs Java; these three scorers are pure Python, so
captions are normalised here instead (lowercase, punctuation stripped, see ``unimm.eval.words``).
"""

from __future__ import annotations

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from unimm.eval.words import words


def caption_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Score ``predictions[i]`` against the reference captions ``references[i]`` (one or more each).

    Returns ``bleu_1`` .. ``bleu_4`` (corpus BLEU, closest reference length), ``cider`` (pycocoevalcap's
    Cider, which is CIDEr-D: clipped counts and a length penalty, x10; its IDF comes from the references
    of this corpus, so it needs several images and a single-image corpus scores 0), ``rouge_l`` (mean
    over images, max over references) and ``n``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise ValueError("no predictions to score")
    if any(not refs for refs in references):
        raise ValueError("every prediction needs at least one reference caption")
    res = {i: [_normalise(p)] for i, p in enumerate(predictions)}
    gts = {i: [_normalise(r) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    return {
        **{f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)},
        "cider": float(cider),
        "rouge_l": float(rouge),
        "n": len(predictions),
    }


def _normalise(text: str) -> str:
    return " ".join(words(text))
