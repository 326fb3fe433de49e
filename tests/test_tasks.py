"""The task layouts of ``tasks.py``: the edit example as one sequence."""

import pytest
import torch

from unimm.sequence import IGNORE, ImageSpan, SpecialIds, TextSpan, collate, pack
from unimm.tasks import (
    Example,
    ImagePrompt,
    Layout,
    Turn,
    answer_ids,
    before_generated,
    conversation_spans,
    training_spans,
)
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
    instruction = tok.encode("make the circle blue")
    assert seq.tokens[: len(instruction) + 3].tolist() == [tok.bos_id, *instruction, tok.sep_id, tok.boi_id]
    assert tgt[0] - src[-1] == 3, "the target follows the source: <eoi>, <boi>, then its first cell"
    shifts = set()  # (t, row, col) offset from each source cell to the target cell at the same place
    for i, (r, c) in enumerate((r, c) for r in range(2) for c in range(2)):  # source 2 x 2, target 2 x 3
        shifts.add(tuple((seq.positions[:, tgt[r * 3 + c]] - seq.positions[:, src[i]]).tolist()))
    assert len(shifts) == 1 and len(set(next(iter(shifts)))) == 1, "one offset, equal on every axis"
    mask = collate([seq], tok.pad_id).attn_mask[0]
    assert mask[tgt][:, src].all(), "every target position sees every source position"
    assert not mask[src][:, tgt].any(), "the source never sees the target"
    assert mask[src][:, src].all(), "the source is read bidirectionally"
    inside = mask[tgt][:, tgt]
    assert torch.equal(inside, torch.ones_like(inside).tril()) if causal else inside.all()
    dropped = training_spans(Example("edit", "x", drop_condition=True, source=source), target, layout, tok)
    assert pack(dropped, special).image_generate == [False, True] and dropped[0].ids == [tok.bos_id, tok.sep_id]


def test_the_source_to_target_offset_does_not_depend_on_the_instruction():
    """Adjacent source and target: a copy is the same relative position for every edit (RoPE sees offsets)."""
    tok = TextTokenizer.train(["make the circle blue", "remove it"], 300)
    layout = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 2), gen_causal=False)
    special = SpecialIds(tok.pad_id, tok.boi_id, tok.eoi_id, tok.img_id)
    offsets = set()
    for text in ("make the circle blue", "remove it", None):
        example = Example("edit", text or "", drop_condition=text is None, source=torch.zeros(1, 4, 4))
        seq = pack(training_spans(example, torch.ones(1, 4, 4), layout, tok), special)
        src, tgt = (seq.image_index == 0).nonzero()[:, 0], (seq.image_index == 1).nonzero()[:, 0]
        offsets.add(tuple((seq.positions[:, tgt] - seq.positions[:, src]).flatten().tolist()))
    assert len(offsets) == 1


def test_edit_prompt_is_the_training_layout_up_to_the_target():
    tok = TextTokenizer.train(["remove the square"], 300)
    layout = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 2), gen_causal=True)
    source = torch.zeros(1, 4, 4)
    train = training_spans(Example("edit", "remove the square", source=source), None, layout, tok)
    prompt = ImagePrompt("remove the square", source=source).spans(layout, tok)
    assert [getattr(s, "ids", None) for s in prompt] == [getattr(s, "ids", None) for s in train]
    assert prompt[2].image is None and prompt[2].generate
    unconditional = ImagePrompt("remove the square", source=source).spans(layout, tok, conditional=False)
    assert unconditional[1].image is source and unconditional[0].ids == [tok.bos_id, tok.sep_id]
    prefix = before_generated(prompt, tok.boi_id)
    assert len(prefix) == 3 and prefix[-1].ids == [tok.boi_id] and prefix[1].image is source


def _conversation(tok: TextTokenizer, layout: Layout):
    """User: image A + "draw it bigger"; assistant: "here" + image B; user: "and smaller"; assistant: image C."""
    a, b, c = torch.zeros(1, 4, 4), torch.ones(1, 4, 4), -torch.ones(1, 4, 4)
    turns = (
        Turn("user", (a, "draw it bigger")),
        Turn("assistant", ("here", b, "done")),
        Turn("user", ("and smaller",)),
        Turn("assistant", (c,)),
    )
    special = SpecialIds(tok.pad_id, tok.boi_id, tok.eoi_id, tok.img_id)
    return turns, pack(training_spans(Example("conversation", turns=turns), None, layout, tok), special), (a, b, c)


@pytest.mark.parametrize("causal", [False, True])
def test_conversation_packs_every_turn_in_order_with_loss_only_on_the_assistant(causal):
    tok = TextTokenizer.train(["draw it bigger", "here done", "and smaller"], 300)
    layout = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 3), gen_causal=causal)
    turns, seq, (a, b, c) = _conversation(tok, layout)
    assert seq.image_generate == [False, True, True] and [seq.images[i] is x for i, x in enumerate((a, b, c))]
    enc = tok.encode
    expected = [tok.bos_id, tok.boi_id, *[tok.img_id] * 4, tok.eoi_id, *enc("draw it bigger"), tok.sep_id]
    expected += [*enc("here"), tok.boi_id, *[tok.img_id] * 6, tok.eoi_id, *enc("done"), tok.eos_id]
    expected += [*enc("and smaller"), tok.sep_id, tok.boi_id, *[tok.img_id] * 6, tok.eoi_id, tok.eos_id]
    assert seq.tokens.tolist() == expected
    # the targets: exactly the assistant's tokens, each announcing <boi> and the closing <eos>; nothing of the user
    predicted = [int(t) for t in seq.targets if t != IGNORE]
    assert predicted == [*enc("here"), tok.boi_id, *enc("done"), tok.eos_id, tok.boi_id, tok.eos_id]
    user_end = expected.index(tok.sep_id)
    assert (seq.targets[: user_end - 1] == IGNORE).all() and seq.targets[user_end - 1] == IGNORE
    second_user = len(expected) - 10 - len(enc("and smaller"))
    assert (seq.targets[second_user - 1 : second_user + len(enc("and smaller"))] == IGNORE).all()
    # the positions of three images: read at (1, 2, 2), generated at (1, 2, 3); each starts one past the last
    boi = [i for i, t in enumerate(expected) if t == tok.boi_id]
    between = 1 + 2 + 1 + len(enc("draw it bigger")) + 1 + len(enc("here"))  # <boi>, 2 rows, <eoi>, text, <sep>
    assert seq.positions[0, boi[1]] == seq.positions[0, boi[0]] + between


def test_an_image_generated_in_turn_two_sees_the_image_attached_in_turn_one():
    tok = TextTokenizer.train(["draw it bigger", "here done", "and smaller"], 300)
    layout = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 2))
    _, seq, _ = _conversation(tok, layout)
    mask = collate([seq], tok.pad_id).attn_mask[0]
    first, second, third = ((seq.image_index == i).nonzero()[:, 0] for i in range(3))
    assert mask[third][:, first].all() and mask[third][:, second].all() and mask[second][:, first].all()
    assert not mask[first][:, second].any() and not mask[second][:, third].any()


def test_conversation_prompt_continues_the_context_and_its_unconditional_twin_drops_it():
    tok = TextTokenizer.train(["draw it bigger", "here"], 300)
    layout = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 2), gen_causal=True)
    context = conversation_spans([Turn("user", (torch.zeros(1, 4, 4), "draw it bigger"))], layout, tok)
    prompt = ImagePrompt("chat", context=tuple(context))
    spans = prompt.spans(layout, tok)
    assert spans[:-1] == context and spans[-1].generate and spans[-1].image is None and spans[-1].announce
    assert before_generated(spans, tok.boi_id)[:-1] == context
    assert [getattr(s, "ids", None) for s in prompt.spans(layout, tok, conditional=False)] == [
        [tok.bos_id],
        None,
        [tok.eos_id],
    ]


def test_masked_text_pads_each_assistant_turn_and_a_user_image_must_be_given():
    tok = TextTokenizer.train(["here done"], 300)
    layout = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 2), answer_len=5)
    spans = conversation_spans([Turn("user", ("hi",)), Turn("assistant", ("here done",))], layout, tok)
    assert spans[-1].ids == answer_ids("here done", tok, layout) and len(spans[-1].ids) == 5
    with pytest.raises(ValueError, match="user turn's image must be given"):
        conversation_spans([Turn("user", (None,))], layout, tok)
    with pytest.raises(ValueError, match="role"):
        Turn("system", ("x",))


@pytest.mark.parametrize("causal", [False, True])
def test_a_linked_edit_target_takes_each_cell_from_its_source_cell(causal):
    """``Layout.link_source``: target cell k is linked to source cell k; a next-code target links the position that
    predicts cell k (``<boi>`` for the first) instead; nothing else is linked; left padding shifts the links."""
    tok = TextTokenizer.train(["make the circle blue"], 300)
    layout = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 2), gen_causal=causal, link_source=True)
    special = SpecialIds(tok.pad_id, tok.boi_id, tok.eoi_id, tok.img_id)
    example = Example("edit", "make the circle blue", source=torch.zeros(1, 4, 4))
    seq = pack(training_spans(example, torch.ones(1, 4, 4), layout, tok), special)
    src, tgt = (seq.image_index == 0).nonzero()[:, 0], (seq.image_index == 1).nonzero()[:, 0]
    at = tgt - 1 if causal else tgt
    assert seq.link[at].tolist() == src.tolist()
    assert (seq.link[[i for i in range(len(seq.link)) if i not in at.tolist()]] == -1).all()
    short = pack(training_spans(Example("edit", "x", source=torch.zeros(1, 4, 4)), None, layout, tok), special)
    batch = collate([seq, short], tok.pad_id, left_pad=True)
    pad = len(seq.tokens) - len(short.tokens)
    assert torch.equal(batch.link[0], seq.link)
    assert torch.equal(batch.link[1, pad:], torch.where(short.link >= 0, short.link + pad, -1))
    assert (batch.link[1, :pad] == -1).all()
    unlinked = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 2), gen_causal=causal)
    assert (pack(training_spans(example, torch.ones(1, 4, 4), unlinked, tok), special).link == -1).all()


def test_only_a_source_of_the_same_grid_is_linked():
    tok = TextTokenizer.train(["make the circle blue"], 300)
    special = SpecialIds(tok.pad_id, tok.boi_id, tok.eoi_id, tok.img_id)
    layout = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 3), link_source=True)
    example = Example("edit", "make it blue", source=torch.zeros(1, 4, 4))
    assert (pack(training_spans(example, torch.ones(1, 4, 4), layout, tok), special).link == -1).all()
    spans = [TextSpan([tok.bos_id]), ImageSpan(None, (2, 2)), ImageSpan(None, (2, 3), generate=True, aligned=True)]
    with pytest.raises(ValueError, match="same grid"):
        pack(spans, special)
    with pytest.raises(ValueError, match="same grid"):
        pack(spans[:1] + spans[2:], special)


def test_an_image_made_in_a_conversation_is_linked_to_the_image_before_it():
    tok = TextTokenizer.train(["draw a red circle now add a square"], 300)
    layout = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 2), link_source=True)
    a, b = torch.zeros(1, 4, 4), torch.ones(1, 4, 4)
    turns = [Turn("user", ("draw a red circle",)), Turn("assistant", ("here", a, "and", b))]
    spans = conversation_spans(turns, layout, tok)
    images = [sp for sp in spans if isinstance(sp, ImageSpan)]
    assert [sp.aligned for sp in images] == [False, True], "the first image has nothing before it"
    shown = conversation_spans([Turn("user", (a, "add a square")), Turn("assistant", (b,))], layout, tok)
    assert [sp.aligned for sp in shown if isinstance(sp, ImageSpan)] == [False, True]
    layout.link_source = False
    assert not any(sp.aligned for sp in conversation_spans(turns, layout, tok) if isinstance(sp, ImageSpan))
