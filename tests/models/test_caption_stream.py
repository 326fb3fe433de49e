"""UnifiedModel.caption_stream: pieces arrive while decoding runs and join to caption()'s text."""

import pytest
import torch

from conftest import tiny_preset
from unimm.models import UnifiedModel
from unimm.objectives.text import text_deltas
from unimm.tokenizers.text import TextTokenizer

TEXTS = ["a handwritten seven", "what digit is this?", "seven", "the digit 7", "a handwritten one"]


def _model(digits_dir, preset: str) -> UnifiedModel:
    torch.manual_seed(0)
    return UnifiedModel(tiny_preset(digits_dir, preset), TextTokenizer.train(TEXTS, 300)).eval()


def _counting_backbone(model: UnifiedModel) -> list[int]:
    """A counter of backbone passes (the prompt, then one per decoding step)."""
    calls = [0]
    model.backbone.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("question", [None, "what digit is this?"])
def test_next_token_stream_yields_each_token_after_its_step(digits_dir, question):
    model = _model(digits_dir, "quick")
    image = torch.rand(1, 1, 8, 8) * 2 - 1
    whole = model.caption(image, question, max_new_tokens=6, generator=torch.Generator().manual_seed(0))[0]
    calls = _counting_backbone(model)
    seen = []
    for piece in model.caption_stream(image, question, max_new_tokens=6, generator=torch.Generator().manual_seed(0)):
        seen.append((calls[0], piece))
    total = calls[0]
    assert whole and "".join(p for _, p in seen) == whole
    # the first piece comes after the prompt's pass alone, each later one after one more step
    assert seen[0][0] == 1 and len(seen) > 1
    assert [c for c, _ in seen] == sorted({c for c, _ in seen}) and seen[-1][0] <= total


def test_masked_text_streams_its_answer_once_when_unmasked(digits_dir):
    model = _model(digits_dir, "unidisc")
    image = torch.rand(1, 1, 8, 8) * 2 - 1
    whole = model.caption(image, generator=torch.Generator().manual_seed(0))[0]
    pieces = list(model.caption_stream(image, generator=torch.Generator().manual_seed(0)))
    assert pieces == ([whole] if whole else [])


def test_caption_stream_takes_one_image(digits_dir):
    model = _model(digits_dir, "quick")
    with pytest.raises(ValueError, match="one image"):
        next(model.caption_stream(torch.zeros(2, 1, 8, 8)))


def test_text_deltas_hold_back_what_decode_cannot_show_yet():
    vocab = {1: "a", 2: " ", 3: "seven", 4: "\ufffd", 9: "<eos>"}

    def decode(ids):
        return "".join(vocab[i] for i in ids).strip()

    assert list(text_deltas([1, 2, 3, 9, 1], decode, eos=9)) == ["a", " seven"]
    assert list(text_deltas([1, 4], decode, eos=9)) == ["a", "\ufffd"]  # shown at the end, as decode shows it
