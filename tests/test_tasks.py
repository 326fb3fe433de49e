"""The task layouts of ``tasks.py``: the edit example as one sequence."""

import pytest
import torch

from unimm.sequence import IGNORE, SpecialIds, collate, pack
from unimm.tasks import Example, ImagePrompt, Layout, before_generated, training_spans
from unimm.tokenizers.text import TextTokenizer


@pytest.mark.parametrize("causal", [False, True])
def test_edit_target_attends_to_its_source_and_alone_carries_the_loss(causal):
    tok = TextTokenizer.train(["make the circle blue"], 300)
    layout = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 3), gen_causal=causal)
    source, target = torch.zeros(1, 4, 4), torch.ones(1, 4, 4)
    spans = training_spans(Example("edit", "make the circle blue", source=source), target, layout, tok)
    special = SpecialIds(tok.pad_id, tok.boi_id, tok.eoi_id, tok.img_id)
    seq = pack(spans, special)
    assert seq.image_generate == [False, True] and seq.images[0] is source and seq.images[1] is target
    assert (seq.targets == IGNORE).all(), "no text loss: not on the source, the instruction or the closing tokens"
    src, tgt = (seq.image_index == 0).nonzero()[:, 0], (seq.image_index == 1).nonzero()[:, 0]
    instruction = torch.tensor(tok.encode("make the circle blue"))
    assert seq.tokens[src[-1] + 2 : src[-1] + 2 + len(instruction)].tolist() == instruction.tolist()
    mask = collate([seq], tok.pad_id).attn_mask[0]
    assert mask[tgt][:, src].all(), "every target position sees every source position"
    assert not mask[src][:, tgt].any(), "the source never sees the target"
    assert mask[src][:, src].all(), "the source is read bidirectionally"
    inside = mask[tgt][:, tgt]
    assert torch.equal(inside, torch.ones_like(inside).tril()) if causal else inside.all()
    dropped = training_spans(Example("edit", "x", drop_condition=True, source=source), target, layout, tok)
    assert pack(dropped, special).image_generate == [False, True] and dropped[2].ids == [tok.sep_id]


def test_edit_prompt_is_the_training_layout_up_to_the_target():
    tok = TextTokenizer.train(["remove the square"], 300)
    layout = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 2), gen_causal=True)
    source = torch.zeros(1, 4, 4)
    train = training_spans(Example("edit", "remove the square", source=source), None, layout, tok)
    prompt = ImagePrompt("remove the square", source=source).spans(layout, tok)
    assert [getattr(s, "ids", None) for s in prompt] == [getattr(s, "ids", None) for s in train]
    assert prompt[3].image is None and prompt[3].generate
    unconditional = ImagePrompt("remove the square", source=source).spans(layout, tok, conditional=False)
    assert unconditional[1].image is source and unconditional[2].ids == [tok.sep_id]
    prefix = before_generated(prompt, tok.boi_id)
    assert len(prefix) == 4 and prefix[-1].ids == [tok.boi_id] and prefix[1].image is source
