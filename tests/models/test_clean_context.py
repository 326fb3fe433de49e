"""``model.clean_context``: in training, a generated image that later text or images learn from is packed twice, its
corrupted cells (noised / masked, with the loss) and a clean copy at the same positions; what follows sees only
the copy, so it conditions on the finished image exactly as at sampling."""

import pytest
import torch

from conftest import tiny_preset
from unimm.models import UnifiedModel
from unimm.sequence import ImageSpan, SpecialIds, TextSpan, attention_mask, pack, packed_length
from unimm.tasks import Example, Layout, Turn, clean_copies, conversation_spans
from unimm.tokenizers.text import TextTokenizer
from unimm.train.stream import make_batch

SPECIAL = SpecialIds(pad=0, boi=1, eoi=2, img=3)
TEXTS = ["draw a red circle", "a red circle", "a blue square right of a red circle", "now add a blue square"]
COPYING = ["transfusion", "mar", "show-o", "bagel"]  # latent, MAR, masked codes; bagel reads through a ViT


def _spans(full_clean_copy: bool = True) -> list:
    image = torch.rand(1, 4, 4)
    return [
        TextSpan([10, 11], loss=False),
        ImageSpan(image, (2, 2), generate=True, clean_copy=full_clean_copy),
        TextSpan([12, 13]),
        ImageSpan(torch.rand(1, 4, 4), (2, 2), generate=True),
    ]


def test_a_clean_copy_sits_at_the_same_positions_and_only_its_own_cells_see_the_corrupted_ones():
    p = pack(_spans(), SPECIAL)
    assert len(p.tokens) == packed_length(_spans()) == 2 + (1 + 4 + 4 + 1) + 2 + (1 + 4 + 1)
    corrupted, copy = torch.arange(3, 7), torch.arange(7, 11)
    assert p.hidden[corrupted].all() and p.hidden.sum() == 4
    torch.testing.assert_close(p.positions[:, corrupted], p.positions[:, copy])
    assert p.image_context == [False, True, False] and p.image_generate == [True, True, True]
    assert (p.copy_of[copy] == p.block[corrupted][0]).all() and (
        p.copy_of[~torch.isin(torch.arange(20), copy)] == -1
    ).all()
    m = attention_mask(
        p.block[None], torch.ones(1, len(p.tokens), dtype=torch.bool), False, p.hidden[None], p.copy_of[None]
    )[0]
    later = torch.arange(11, len(p.tokens))  # <eoi>, the text and the next image
    assert not m[later][:, corrupted].any() and m[later][:, copy].all()
    assert not m[copy][:, corrupted].any() and m[copy][:, copy].all()  # the copy is a finished image: its own block
    assert m[corrupted][:, corrupted].all() and m[corrupted][:, :3].all()  # the corrupted cells see what came before
    plain = pack(_spans(False), SPECIAL)
    assert not plain.hidden.any() and len(plain.tokens) == len(p.tokens) - 4


def test_under_full_attention_no_block_sees_its_own_clean_copy():
    p = pack(_spans(), SPECIAL)
    m = attention_mask(
        p.block[None], torch.ones(1, len(p.tokens), dtype=torch.bool), True, p.hidden[None], p.copy_of[None]
    )[0]
    corrupted, copy = torch.arange(3, 7), torch.arange(7, 11)
    assert not m[corrupted][:, copy].any(), "the corrupted cells would read their answer from the copy"
    assert not m[:3][:, corrupted].any() and m[:3][:, copy].all()  # everyone else sees the copy, not the noise


def test_an_image_aligned_with_a_copied_one_links_to_the_clean_copy():
    spans = _spans()
    spans[3] = ImageSpan(torch.rand(1, 4, 4), (2, 2), generate=True, aligned=True)
    p = pack(spans, SPECIAL)
    target = torch.arange(15, 19)
    assert p.link[target].tolist() == list(range(7, 11))
    assert p.image_base == [-1, -1, 1]


def test_only_generated_bidirectional_spans_take_a_copy():
    with pytest.raises(ValueError, match="generated, bidirectional"):
        ImageSpan(torch.rand(1, 4, 4), (2, 2), clean_copy=True)
    with pytest.raises(ValueError, match="generated, bidirectional"):
        ImageSpan(torch.rand(1, 4, 4), (2, 2), generate=True, causal=True, clean_copy=True)


def test_clean_copies_marks_the_images_something_after_them_learns_from():
    tok = TextTokenizer.train(TEXTS, 300)
    layout = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 2), clean_context=True)
    a, b = torch.rand(2, 1, 4, 4)
    turns = [Turn("user", ("draw a red circle",)), Turn("assistant", ("a red circle", a, "a blue square", b))]
    spans = clean_copies(conversation_spans(turns, layout, tok), layout, {tok.eos_id, tok.sep_id})
    images = [sp for sp in spans if isinstance(sp, ImageSpan)]
    assert [sp.clean_copy for sp in images] == [True, False]  # the last is followed only by its closing <eos>
    off = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 2))
    assert not any(
        sp.clean_copy
        for sp in clean_copies(conversation_spans(turns, off, tok), off, set())
        if isinstance(sp, ImageSpan)
    )
    causal = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 2), gen_causal=True, clean_context=True)
    spans = clean_copies(conversation_spans(turns, causal, tok), causal, {tok.eos_id})
    assert not any(sp.clean_copy for sp in spans if isinstance(sp, ImageSpan))


def _model(digits_dir, preset: str, clean: bool) -> UnifiedModel:
    cfg = tiny_preset(digits_dir, preset, **{"model.clean_context": clean, "model.max_seq_len": 160})
    torch.manual_seed(0)
    model = UnifiedModel(cfg, TextTokenizer.train(TEXTS, 300))
    model.prepare(torch.rand(32, 1, 8, 8) * 2 - 1, progress=False, captions=[TEXTS[1]] * 32)
    return model


def _document() -> list[Turn]:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 1, 8, 8, generator=gen) * 2 - 1
    return [
        Turn("user", ("draw a red circle",)),
        Turn("assistant", ("a red circle", a, "a blue square right of a red circle", b)),
    ]


def _hidden_after_first_image(model: UnifiedModel, turns: list[Turn]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The backbone's hidden states at the positions from the first generated image's ``<eoi>`` to the second's
    ``<boi>``: in two training forwards (noise seeds 0 and 1; clean copies dropped from the rows), and as sampling
    lays the conversation out (both images given, embedded as finished ones)."""
    outs: list[torch.Tensor] = []
    hook = model.backbone.register_forward_hook(lambda module, args, out: outs.append(out[0][0].detach()))
    batch = make_batch(model, torch.zeros(1, 1, 8, 8), [Example("conversation", turns=turns)])
    for seed in (0, 1):
        model(batch, torch.Generator().manual_seed(seed))
    sampled = model.pack([conversation_spans(turns, model.layout, model.tokenizer)])
    model.ctx.run(model.ctx.embed_inputs(sampled), sampled)
    hook.remove()
    cells = sampled.generated()[0].nonzero()[:, 0]
    first, second = cells[: len(cells) // 2], cells[len(cells) // 2 :]
    at = torch.arange(int(first.max()) + 1, int(second.min()))
    keep = ~batch.copies()[0]
    return [h[keep][at] for h in outs[:2]], outs[2][at]


@pytest.mark.parametrize("preset", COPYING)
def test_what_follows_a_generated_image_sees_it_as_sampling_shows_it(digits_dir, preset):
    """With clean copies the hidden states after a generated image are those of the same conversation laid out as
    sampling sees it (the made image given, embedded as a finished one), whatever the training noise; without
    them they depend on the noise and differ from sampling."""
    model = _model(digits_dir, preset, clean=True).eval()
    turns = _document()
    batch = make_batch(model, torch.zeros(1, 1, 8, 8), [Example("conversation", turns=turns)])
    assert batch.image_context.tolist() == [False, True, False]
    trained, sampled = _hidden_after_first_image(model, turns)
    assert len(sampled) >= 3  # <eoi>, the text, the next <boi>
    for h in trained:
        torch.testing.assert_close(h, sampled, rtol=1e-4, atol=1e-4)

    plain = _model(digits_dir, preset, clean=False).eval()
    trained, sampled = _hidden_after_first_image(plain, turns)
    assert not torch.allclose(trained[0], trained[1], atol=1e-4), "without copies the text sees the corrupted image"
    assert not torch.allclose(trained[0], sampled, atol=1e-4)


@pytest.mark.parametrize("preset", COPYING)
def test_a_clean_context_step_trains_with_the_image_loss_on_the_corrupted_cells_only(digits_dir, preset):
    model = _model(digits_dir, preset, clean=True).train()
    batch = make_batch(model, torch.zeros(1, 1, 8, 8), [Example("conversation", turns=_document())])
    cells = int(batch.copies().sum())
    assert cells > 0 and int(batch.generated().sum()) == 2 * cells  # two generated images, one copy
    loss, metrics = model(batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and metrics["image_loss"] > 0


@pytest.mark.parametrize("preset", ["chameleon", "connector", "unidisc"])
def test_clean_context_is_refused_where_it_would_change_nothing_or_cannot_apply(digits_dir, preset):
    with pytest.raises(ValueError, match="clean_context"):
        _model(digits_dir, preset, clean=True)
