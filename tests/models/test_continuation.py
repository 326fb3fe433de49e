"""Continuing a conversation: cached multi-turn decoding equals the uncached reference token for token (images
made in between), a ``<boi>`` hands over to the writer and text resumes after the image, limits stop a reply
and close the turn, and masked text refuses."""

import pytest
import torch

from conftest import force, tiny_model
from unimm.models import UnifiedModel
from unimm.models.continuation import Continuation, DecodeSettings
from unimm.sequence import TextSpan
from unimm.tasks import Turn, conversation_spans, turn_spans


def _two_turns(model: UnifiedModel, use_cache: bool):
    """Turn 1: an image and a question, the reply forced to make an image at its 2nd token; turn 2: text."""
    tok = model.tokenizer
    logits = force(model, {1: tok.boi_id, 5: tok.eos_id, 9: tok.boi_id, 12: tok.eos_id})
    cont = Continuation(model, use_cache)
    image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cont.append(conversation_spans([Turn("user", (image, "draw a two"))], model.layout, tok))
    settings = DecodeSettings(max_new_tokens=8, max_images=2)
    first = cont.reply(settings, torch.Generator().manual_seed(0))
    cont.append(turn_spans(Turn("user", ("now a zero",)), model.layout, tok))
    second = cont.reply(settings, torch.Generator().manual_seed(0))
    return cont, [first, second], logits


def _linked_model(digits_dir, preset: str) -> UnifiedModel:
    """``model.source_link`` with every weight awake (the link and the zero-initialised heads random)."""
    model = tiny_model(digits_dir, preset, **{"model.source_link": True})
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.3 if p is model.source_link.weight else 0.02)
    return model


@pytest.mark.parametrize(
    "preset, linked",
    [("chameleon", False), ("transfusion", False), ("janus", False), ("connector", False)]
    + [("chameleon", True), ("transfusion", True)],
)
def test_cached_multi_turn_decoding_equals_uncached(digits_dir, preset, linked):
    """With ``model.source_link`` each image made is linked to the image before it (the user's, then the first made),
    across the pieces the cache was filled in."""
    make = _linked_model if linked else tiny_model
    model = make(digits_dir, preset)
    cached, replies, logits = _two_turns(model, True)
    ref, ref_replies, ref_logits = _two_turns(make(digits_dir, preset), False)
    assert cached.cache is not None and ref.cache is None
    assert [sp.ids if isinstance(sp, TextSpan) else None for sp in cached.spans] == [
        sp.ids if isinstance(sp, TextSpan) else None for sp in ref.spans
    ]
    assert len(logits) == len(ref_logits) > 10
    for a, b in zip(logits, ref_logits, strict=True):
        assert torch.equal(a.argmax(-1), b.argmax(-1)) and torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    for a, b in zip(replies, ref_replies, strict=True):
        assert [p if isinstance(p, str) else None for p in a.parts] == [
            p if isinstance(p, str) else None for p in b.parts
        ]
        assert len(a.images) == len(b.images) and all(
            torch.allclose(x, y, atol=1e-4) for x, y in zip(a.images, b.images, strict=True)
        )
    # the forced <boi> made an image in turn 1, in place, and text resumed after it
    first = replies[0]
    assert len(first.images) == 1 and first.images[0].shape == (1, 8, 8) and first.stop == "eos"
    assert isinstance(first.parts[0], str) and first.parts[1] is first.images[0]
    assert cached.position == ref.position and cached.length == ref.length == cached.cache.length


def test_limits_stop_a_reply_and_close_its_turn(digits_dir):
    model = tiny_model(digits_dir, "chameleon")
    tok = model.tokenizer
    force(model, {0: tok.boi_id})
    cont = Continuation(model)
    cont.append(conversation_spans([Turn("user", ("draw a two",))], model.layout, tok))
    reply = cont.reply(DecodeSettings(max_new_tokens=5, max_images=0))
    assert reply.stop == "max_images" and reply.images == [] and cont.spans[-1].ids == [tok.eos_id]
    model = tiny_model(digits_dir, "chameleon")
    force(model, {i: tok.encode("two")[0] for i in range(100)})
    cont = Continuation(model)
    cont.append(conversation_spans([Turn("user", ("draw a two",))], model.layout, tok))
    reply = cont.reply(DecodeSettings(max_new_tokens=3))
    assert reply.stop == "max_new_tokens" and reply.text and cont.spans[-1].ids == [tok.eos_id]
    reply = cont.reply(DecodeSettings(max_new_tokens=500))
    assert reply.stop == "max_seq_len" and cont.length <= model.cfg.model.max_seq_len
    with pytest.raises(ValueError, match="more than model.max_seq_len"):
        cont.append([TextSpan([tok.eos_id] * 200)])


def test_a_reply_that_ends_on_the_last_position_ends_by_eos(digits_dir):
    """The last free position can hold the model's own ``<eos>``: a reply exactly as long as the room left stops by
    ``eos``, not by the limit (the limit closes a reply only when the model would go on)."""
    model = tiny_model(digits_dir, "chameleon")
    tok = model.tokenizer
    cont = Continuation(model)
    cont.append(conversation_spans([Turn("user", ("draw a two",))], model.layout, tok))
    left = model.cfg.model.max_seq_len - cont.length
    force(model, {**{i: tok.encode("two")[0] for i in range(left - 1)}, left - 1: tok.eos_id})
    reply = cont.reply(DecodeSettings(max_new_tokens=500))
    assert reply.stop == "eos" and cont.length == model.cfg.model.max_seq_len


def test_interleave_answers_a_prompt_with_text_and_images(digits_dir):
    model = tiny_model(digits_dir, "transfusion")
    tok = model.tokenizer
    force(model, {0: tok.encode("two")[0], 1: tok.boi_id, 2: tok.boi_id, 3: tok.eos_id})
    reply = model.interleave("write the digits of 22, one image each", generator=torch.Generator().manual_seed(0))
    assert reply.stop == "eos" and len(reply.images) == 2 and isinstance(reply.parts[0], str)
    with pytest.raises(ValueError, match="interleave expects"):
        model.interleave([Turn("user", (torch.zeros(3, 8, 8), "x"))])


def test_masked_text_cannot_continue_left_to_right(digits_dir):
    with pytest.raises(NotImplementedError, match="fixed-length answer"):
        Continuation(tiny_model(digits_dir, "unidisc"))
