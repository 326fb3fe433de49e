"""Packing of text and image spans: tokens, positions, targets and the attention mask."""

import torch

from unimm.sequence import IGNORE, IMAGE, TEXT, ImageSpan, SpecialIds, TextSpan, attention_mask, collate, pack

SP = SpecialIds(pad=0, boi=3, eoi=4, img=5)


def test_text_then_image_layout():
    patches = torch.arange(8.0).view(4, 2)
    p = pack([TextSpan([1, 10, 11]), ImageSpan(patches, (2, 2), generate=True), TextSpan([2])], SP, 2)
    assert p.tokens.tolist() == [1, 10, 11, 3, 5, 5, 5, 5, 4, 2]
    assert p.modality.tolist() == [TEXT] * 4 + [IMAGE] * 4 + [TEXT] * 2
    # text advances by one on all axes; image patches get (p, p + row, p + col); then p + max(h, w)
    assert p.positions.tolist() == [
        [0, 1, 2, 3, 4, 4, 4, 4, 6, 7],
        [0, 1, 2, 3, 4, 4, 5, 5, 6, 7],
        [0, 1, 2, 3, 4, 5, 4, 5, 6, 7],
    ]
    # each position predicts the next text token with loss=True; nothing predicts <boi>, patches or <eoi>
    assert p.targets.tolist() == [10, 11, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, 2, IGNORE]
    torch.testing.assert_close(p.patches[4:8], patches)
    assert p.patches[:4].abs().sum() == 0 and p.image_index.tolist() == [-1] * 4 + [0] * 4 + [-1] * 2
    assert p.image_generate == [True] and p.next_position == 8


def test_loss_false_span_gives_no_targets():
    p = pack([TextSpan([1], loss=False), ImageSpan(torch.zeros(1, 2), (1, 1)), TextSpan([7, 8])], SP, 2)
    assert p.targets.tolist() == [IGNORE, IGNORE, IGNORE, 7, 8, IGNORE]


def test_mask_is_causal_across_spans_and_bidirectional_inside_images():
    p = pack([TextSpan([1, 9]), ImageSpan(torch.zeros(4, 2), (2, 2)), TextSpan([6])], SP, 2)
    m = attention_mask(p.span[None], p.modality[None])[0]
    img = slice(3, 7)
    assert m[img, img].all()  # every patch sees every patch of its image
    assert not m[2, 3:].any()  # <boi> does not see the image after it
    assert m[7, :8].all() and not m[:3].triu(1).any()  # after the image: causal
    assert not m[0, 1]


def test_two_images_do_not_see_each_other_ahead():
    spans = [TextSpan([1]), ImageSpan(torch.zeros(2, 2), (1, 2)), ImageSpan(torch.zeros(2, 2), (1, 2))]
    p = pack(spans, SP, 2)
    m = attention_mask(p.span[None], p.modality[None])[0]
    first, second = [2, 3], [6, 7]
    assert m[first][:, first].all() and m[second][:, second].all()
    assert not m[first][:, second].any() and m[second][:, first].all()
    assert p.image_index[p.image_index >= 0].tolist() == [0, 0, 1, 1]


def test_collate_pads_and_numbers_images_across_batch():
    a = pack([TextSpan([1, 10, 11, 12]), ImageSpan(torch.ones(2, 2), (1, 2), True)], SP, 2)
    b = pack([TextSpan([1]), ImageSpan(torch.ones(2, 2), (1, 2), False), TextSpan([2])], SP, 2)
    batch = collate([a, b], pad_id=0)
    assert batch.tokens.shape == (2, 8)
    assert batch.tokens[1, 6:].tolist() == [0, 0] and (batch.targets[1, 5:] == IGNORE).all()
    assert batch.image_id[0][batch.image_id[0] >= 0].unique().tolist() == [0]
    assert batch.image_id[1][batch.image_id[1] >= 0].unique().tolist() == [1]
    assert batch.image_generate.tolist() == [True, False]
    assert batch.attn_mask.shape == (2, 8, 8)
