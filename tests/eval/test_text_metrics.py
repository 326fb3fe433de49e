"""BLEU, CIDEr-D and ROUGE-L of free captions: perfect for the references themselves, lower for wrong ones."""

import pytest

from unimm.eval.text_metrics import caption_metrics

REFERENCES = [
    ["a red circle above a blue square", "a blue square below a red circle"],
    ["two small green triangles side by side"],
    ["a handwritten seven on a white page"],
    ["a yellow square left of a purple circle"],
]


def test_identical_captions_score_perfectly():
    best = caption_metrics([refs[0] for refs in REFERENCES], REFERENCES)
    assert best["bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert best["rouge_l"] == pytest.approx(1.0)
    mismatched = caption_metrics([refs[0] for refs in REFERENCES[1:] + REFERENCES[:1]], REFERENCES)
    assert best["cider"] > mismatched["cider"] and mismatched["bleu_4"] < 0.1


def test_unrelated_caption_scores_lower_and_punctuation_is_ignored():
    refs = REFERENCES[:2]
    close = caption_metrics(["A red circle, above a BLUE square!", "two small green triangles side by side"], refs)
    unrelated = caption_metrics(["a cat sleeping on the sofa", "two small green triangles side by side"], refs)
    assert close["bleu_4"] == pytest.approx(1.0, abs=1e-6)
    for key in ("bleu_1", "bleu_4", "cider", "rouge_l"):
        assert unrelated[key] < close[key], key


def test_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="reference lists"):
        caption_metrics(["a caption"], [])
