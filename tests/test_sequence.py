"""Packing of text and image spans: tokens, positions, targets and the attention mask."""

import pytest
import torch

from unimm.sequence import (
    IGNORE,
    IMAGE,
    TEXT,
    ImageSpan,
    SpecialIds,
    TextSpan,
    attention_mask,
    collate,
    pack,
    packed_length,
)

SP = SpecialIds(pad=0, boi=3, eoi=4, img=5)


def test_text_then_image_layout():
    image = torch.rand(1, 4, 4)
    p = pack([TextSpan([1, 10, 11]), ImageSpan(image, (2, 2), generate=True), TextSpan([2])], SP)
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
    assert p.images[0] is image and p.image_index.tolist() == [-1] * 4 + [0] * 4 + [-1] * 2
    assert p.block.tolist() == [-1] * 4 + [1] * 4 + [-1] * 2
    assert p.image_generate == [True] and p.next_position == 8


def test_packed_fields_keep_their_dtypes_and_shapes():
    """``pack`` builds its tensors through numpy (speed); each field keeps the dtype the model indexes with."""
    spans = [TextSpan([1, 10]), ImageSpan(torch.rand(1, 4, 4), (2, 2), changes=torch.tensor([0, 1, 1, 0])),
             ImageSpan(None, (2, 2), generate=True, aligned=True, clean_copy=True), TextSpan([2])]  # fmt: skip
    p = pack(spans, SP)
    n = len(p.tokens)
    for name in ("tokens", "modality", "targets", "block", "image_index", "link", "copy_of"):
        assert getattr(p, name).dtype == torch.long and getattr(p, name).shape == (n,), name
    assert p.positions.dtype == torch.long and p.positions.shape == (3, n) and p.positions.is_contiguous()
    assert p.ground.dtype == torch.float32 and p.ground.tolist()[3:7] == [0.0, 1.0, 1.0, 0.0]
    assert p.hidden.dtype == torch.bool and int(p.hidden.sum()) == 4 and int((p.copy_of >= 0).sum()) == 4


def test_packed_length_counts_what_pack_lays_out():
    for spans in (
        [TextSpan([1, 10, 11]), ImageSpan(None, (2, 3), generate=True), TextSpan([2])],
        [TextSpan([1]), ImageSpan(None, (1, 1)), TextSpan([7, 8, 9], loss=False), ImageSpan(None, (4, 4))],
        [TextSpan([1, 2]), ImageSpan(None, (2, 2), causal=True), TextSpan([])],
    ):
        assert packed_length(spans) == len(pack(spans, SP).tokens)


def test_loss_false_span_gives_no_targets():
    p = pack([TextSpan([1], loss=False), ImageSpan(None, (1, 1)), TextSpan([7, 8])], SP)
    assert p.targets.tolist() == [IGNORE, IGNORE, IGNORE, 7, 8, IGNORE]


def test_mask_is_causal_across_spans_and_bidirectional_inside_images():
    p = pack([TextSpan([1, 9]), ImageSpan(None, (2, 2)), TextSpan([6])], SP)
    m = attention_mask(p.block[None], torch.ones(1, 9, dtype=torch.bool))[0]
    img = slice(3, 7)
    assert m[img, img].all()  # every patch sees every patch of its image
    assert not m[2, 3:].any()  # <boi> does not see the image after it
    assert m[7, :8].all() and not m[:3].triu(1).any()  # after the image: causal
    assert not m[0, 1]


def test_two_images_do_not_see_each_other_ahead():
    spans = [TextSpan([1]), ImageSpan(None, (1, 2)), ImageSpan(None, (1, 2))]
    p = pack(spans, SP)
    m = attention_mask(p.block[None], torch.ones(1, 9, dtype=torch.bool))[0]
    first, second = [2, 3], [6, 7]
    assert m[first][:, first].all() and m[second][:, second].all()
    assert not m[first][:, second].any() and m[second][:, first].all()
    assert p.image_index[p.image_index >= 0].tolist() == [0, 0, 1, 1]


def test_collate_pads_and_numbers_images_across_batch():
    a = pack([TextSpan([1, 10, 11, 12]), ImageSpan(torch.ones(1, 2, 2), (1, 2), True)], SP)
    b = pack([TextSpan([1]), ImageSpan(torch.zeros(1, 2, 2), (1, 2), False), TextSpan([2])], SP)
    batch = collate([a, b], pad_id=0)
    assert batch.tokens.shape == (2, 8)
    assert batch.tokens[1, 6:].tolist() == [0, 0] and (batch.targets[1, 5:] == IGNORE).all()
    assert batch.image_id[0][batch.image_id[0] >= 0].unique().tolist() == [0]
    assert batch.image_id[1][batch.image_id[1] >= 0].unique().tolist() == [1]
    assert batch.image_generate.tolist() == [True, False]
    assert batch.attn_mask.shape == (2, 8, 8) and batch.images.shape == (2, 1, 2, 2)
    assert batch.images[0].eq(1).all() and batch.images[1].eq(0).all()
    assert not batch.attn_mask[1, :, 6:].triu(1).any() and batch.valid[1].tolist() == [True] * 6 + [False] * 2


def test_causal_image_span_has_no_bidirectional_block():
    p = pack([TextSpan([1]), ImageSpan(None, (2, 2), generate=True, causal=True)], SP)
    m = attention_mask(p.block[None], torch.ones(1, len(p.tokens), dtype=torch.bool))[0]
    assert (p.block == -1).all() and not m.triu(1).any()


def test_left_padding_ends_rows_together_and_hides_padding():
    a = pack([TextSpan([1, 10, 11, 12])], SP)
    b = pack([TextSpan([1, 10])], SP)
    batch = collate([a, b], pad_id=0, left_pad=True)
    assert batch.tokens.tolist() == [[1, 10, 11, 12], [0, 0, 1, 10]]
    assert batch.positions[1, 0].tolist() == [0, 0, 0, 1]  # positions count from the first real token
    m = batch.attn_mask[1]
    assert not m[2:, :2].any() and m[3, 2:].all()  # real tokens never see the padding before them


def test_full_attention_lets_every_real_position_see_every_other():
    a = pack([TextSpan([1, 10, 11]), ImageSpan(None, (1, 2))], SP)
    b = pack([TextSpan([1])], SP)
    batch = collate([a, b], pad_id=0, full_attention=True)
    assert batch.attn_mask[0].all()
    assert batch.attn_mask[1, 0].tolist() == [True] + [False] * 6  # and padding stays hidden


def test_generated_marks_the_positions_of_images_being_generated():
    read = [TextSpan([1]), ImageSpan(torch.rand(1, 4, 4), (1, 2)), TextSpan([7])]
    write = [TextSpan([1, 9]), ImageSpan(None, (2, 1), generate=True), TextSpan([2])]
    batch = collate([pack(read, SP), pack(write, SP)], SP.pad, left_pad=True)
    assert batch.generated().tolist() == [
        [False] * 7,  # one position of left padding, then <bos> <boi> read read <eoi> 7
        [False] * 3 + [True] * 2 + [False] * 2,
    ]
    text_only = collate([pack([TextSpan([1, 2])], SP)], SP.pad)
    assert text_only.generated().tolist() == [[False, False]]


def test_image_rows_name_the_example_each_image_sits_in():
    """Joint masking gives each image its example's masking time through ``image_rows``."""
    two = [TextSpan([1]), ImageSpan(torch.rand(1, 4, 4), (1, 2)), ImageSpan(None, (2, 1), generate=True)]
    none = [TextSpan([1, 9])]
    one = [TextSpan([1]), ImageSpan(torch.rand(1, 4, 4), (1, 1))]
    batch = collate([pack(s, SP) for s in (two, none, one)], SP.pad)
    assert batch.image_rows().tolist() == [0, 0, 2]


def test_clip_span_positions_use_the_time_axis():
    """A 2-frame 2x2 clip: cells in raster-in-time order at (p + f, p + r, p + c), then p + max(T, h, w)."""
    clip = torch.rand(2, 1, 4, 4)
    p = pack([TextSpan([1]), ImageSpan(clip, (2, 2, 2), generate=True), TextSpan([2])], SP)
    assert p.tokens.tolist() == [1, 3] + [5] * 8 + [4, 2]
    assert p.positions.tolist() == [
        [0, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 5],
        [0, 1, 2, 2, 3, 3, 2, 2, 3, 3, 4, 5],
        [0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 4, 5],
    ]
    # a clip longer than it is wide advances by its frame count
    long = pack([ImageSpan(None, (5, 1, 2)), TextSpan([2])], SP)
    assert long.positions[:, -2].tolist() == [6, 6, 6] and long.next_position == 8  # <boi> 0, cells 1.., <eoi> 6
    assert packed_length([ImageSpan(None, (5, 1, 2))]) == 12 == len(long.tokens) - 1


def test_clip_mask_bidirectional_across_frames_or_causal_in_raster_time():
    both = [TextSpan([1]), ImageSpan(None, (3, 1, 2)), TextSpan([6])]
    p = pack(both, SP)
    m = attention_mask(p.block[None], torch.ones(1, len(p.tokens), dtype=torch.bool))[0]
    cells = slice(2, 8)
    assert m[cells, cells].all()  # the first frame sees the last
    causal = pack([TextSpan([1]), ImageSpan(None, (3, 1, 2), causal=True), TextSpan([6])], SP)
    mc = attention_mask(causal.block[None], torch.ones(1, len(causal.tokens), dtype=torch.bool))[0]
    assert torch.equal(mc[cells, cells], torch.ones(6, 6, dtype=torch.bool).tril())  # frame 0 before frame 1 ...
    assert causal.positions[0, cells].tolist() == [2, 2, 3, 3, 4, 4]  # ... in time order


def test_image_is_the_one_frame_clip():
    image = torch.rand(1, 4, 4)
    spans = [TextSpan([1, 10]), ImageSpan(image, (2, 3), generate=True, causal=True), TextSpan([2])]
    clip = [TextSpan([1, 10]), ImageSpan(image, (1, 2, 3), generate=True, causal=True), TextSpan([2])]
    a, b = pack(spans, SP), pack(clip, SP)
    assert spans[1].grid == (1, 2, 3)
    for name in ("tokens", "modality", "positions", "targets", "block", "image_index"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.next_position == b.next_position == 8  # <boi> at 2, cells from 3, <eoi> at 3 + max(h, w)
    with pytest.raises(ValueError, match="grid"):
        ImageSpan(None, (2, 0, 2))
