"""``model.edit_grounding``: an edit's source read carries, per cell, whether the edit changes it, and the model's
grounding head learns to predict that from the source's hidden states (which have seen the instruction)."""

import math

import pytest
import torch

from conftest import tiny_preset
from unimm.config import ConfigError, with_sampling
from unimm.models import UnifiedModel
from unimm.sequence import ImageSpan
from unimm.tasks import Example, ImagePrompt, Layout, changed_cells, edit_spans
from unimm.tokenizers.text import TextTokenizer
from unimm.train.stream import make_batch

TEXTS = ["make the circle blue", "remove the square", "a red circle"]
GROUNDED = ["transfusion", "chameleon", "show-o", "janus"]  # latent, ar-codes, masked-codes; janus reads with a ViT


def _model(digits_dir, preset: str = "transfusion", weight: float = 1.0) -> UnifiedModel:
    cfg = tiny_preset(digits_dir, preset, **{"model.edit_grounding": weight})
    torch.manual_seed(0)
    model = UnifiedModel(cfg, TextTokenizer.train(TEXTS, 300))
    model.prepare(torch.rand(32, 1, 8, 8) * 2 - 1, progress=False, captions=[TEXTS[2]] * 32)
    return model


def _pair(corner: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A source and a target [1, 8, 8] equal but for a 2x2 square at ``corner`` (row, col)."""
    source = torch.rand(1, 8, 8) * 2 - 1
    target = source.clone()
    r, c = corner
    target[:, r : r + 2, c : c + 2] += 0.5
    return source, target


def test_changed_cells_marks_exactly_the_cells_whose_pixels_differ():
    source = torch.zeros(3, 8, 8)
    target = source.clone()
    target[1, 0, 0] = 0.2  # one channel of one pixel: cell (0, 0) of a 4x4 grid
    target[:, 5, 6] = -0.5  # cell (2, 3)
    target[:, 7, 0] = 0.01  # below the threshold: no change
    expect = torch.zeros(4, 4)
    expect[0, 0] = expect[2, 3] = 1
    torch.testing.assert_close(changed_cells(source, target, (4, 4)), expect.flatten())
    torch.testing.assert_close(changed_cells(source, target, (1, 8, 8)).sum(), torch.tensor(2.0))
    assert not changed_cells(source, source, (4, 4)).any()
    with pytest.raises(ValueError, match="one shape"):
        changed_cells(source, target[:, :4], (4, 4))


def test_an_open_place_edit_also_marks_every_blank_source_cell():
    """``open_place`` (an add): the cells of what the source already holds stay unchanged, every blank cell (all its
    pixels the background, the source's median colour) counts as changed, wherever the target put the new object."""
    source = torch.ones(3, 8, 8)  # a white scene
    source[0, 0:2, 0:2] = -1  # an object in cell (0, 0) of a 4x4 grid
    source[:, 2, 5] = 0.0  # a pixel of another in cell (1, 2)
    target = source.clone()
    target[1, 6:8, 6:8] = -1  # the added object, in cell (3, 3)
    only = torch.zeros(16)
    only[15] = 1
    torch.testing.assert_close(changed_cells(source, target, (4, 4)), only)
    open_cells = torch.ones(16)
    open_cells[0] = open_cells[6] = 0
    torch.testing.assert_close(changed_cells(source, target, (4, 4), open_place=True), open_cells)
    moved = source.clone()  # the object of cell (0, 0) moved away: that cell changes, open or not
    moved[0, 0:2, 0:2] = 1
    moved[0, 4:6, 0:2] = -1
    assert changed_cells(source, moved, (4, 4), open_place=True)[0] == 1


def test_open_place_edits_carry_their_blank_cells_only_under_ground_open():
    tok = TextTokenizer.train(TEXTS, 300)
    source = torch.ones(1, 8, 8)
    source[:, :2, :2] = -1
    target = source.clone()
    target[:, 6:, 6:] = -1

    def changes(layout: Layout, open_place: bool) -> torch.Tensor:
        spans = edit_spans(source, "add a red triangle", target, layout, tok, open_place)
        return next(sp.changes for sp in spans if isinstance(sp, ImageSpan) and not sp.generate)

    grounded = Layout(read_grid=(1, 4, 4), gen_grid=(1, 4, 4), ground_source=True)
    opened = Layout(read_grid=(1, 4, 4), gen_grid=(1, 4, 4), ground_source=True, ground_open=True)
    plain = changed_cells(source, target, (4, 4))
    torch.testing.assert_close(changes(grounded, True), plain)  # the run was not trained so: as before
    torch.testing.assert_close(changes(opened, False), plain)  # not an add: as before
    torch.testing.assert_close(changes(opened, True), changed_cells(source, target, (4, 4), open_place=True))
    assert changes(opened, True).sum() == 15


def test_the_stream_marks_adds_as_open_and_the_batch_grounds_them_so(edits_dir):
    """On the edit dataset: each add (and only adds) comes with ``open_place``, and a model trained with
    ``model.edit_grounding_open`` gets that add's blank cells as changed at its source positions."""
    from unimm.data.datasets import ImageTextData
    from unimm.data.edits import load_edits
    from unimm.train.loop import resolve_data
    from unimm.train.stream import ExampleStream

    cfg = tiny_preset(edits_dir, "transfusion", **{"model.edit_grounding": 1.0, "model.edit_grounding_open": True})
    data, templates = resolve_data(cfg)
    assert isinstance(data, ImageTextData)
    kinds = [e.edit.kind for e in load_edits(edits_dir, "train")]
    assert data.open_places == [k == "add" for k in kinds] and "add" in kinds
    stream = ExampleStream(data, templates, cfg.data.model_copy(update={"edit_fraction": 1.0}), 16, 0)
    model = UnifiedModel(cfg, TextTokenizer.train(data.stored_texts(), 300))
    seen = set()
    for k in range(6):
        images, examples = stream.batch(k)
        batch = make_batch(model, images, examples)
        for row, ((i, _, _), ex) in enumerate(zip(stream.samples(k), examples, strict=True)):
            assert ex.open_place == (kinds[i] == "add")
            if ex.task != "edit" or ex.drop_condition:
                continue
            at = batch.ground[row] >= 0
            want = changed_cells(ex.source, images[row], model.layout.read_grid, open_place=ex.open_place)
            torch.testing.assert_close(batch.ground[row, at], want)
            seen.add(ex.open_place)
    assert seen == {True, False}
    with pytest.raises(ConfigError, match="needs model.edit_grounding > 0"):
        tiny_preset(edits_dir, "transfusion", **{"model.edit_grounding_open": True})


def test_only_an_instructed_training_edit_carries_its_changes_on_the_source_cells():
    tok = TextTokenizer.train(TEXTS, 300)
    layout = Layout(read_grid=(1, 4, 4), gen_grid=(1, 4, 4), ground_source=True)
    source, target = _pair((0, 0))
    spans = edit_spans(source, TEXTS[0], target, layout, tok)
    read = [sp for sp in spans if isinstance(sp, ImageSpan) and not sp.generate]
    torch.testing.assert_close(read[0].changes, changed_cells(source, target, (4, 4)))
    assert read[0].changes.sum() == 1
    for instruction, tgt in ((None, target), (TEXTS[0], None)):  # the unconditional branch; a prompt to sample
        assert all(
            sp.changes is None for sp in edit_spans(source, instruction, tgt, layout, tok) if isinstance(sp, ImageSpan)
        )
    plain = Layout(read_grid=(1, 4, 4), gen_grid=(1, 4, 4))
    assert all(
        sp.changes is None for sp in edit_spans(source, TEXTS[0], target, plain, tok) if isinstance(sp, ImageSpan)
    )
    with pytest.raises(ValueError, match="one value per cell"):
        ImageSpan(source, (4, 4), changes=torch.zeros(15))


def test_the_batch_puts_the_targets_at_the_source_positions_only(digits_dir):
    model = _model(digits_dir)
    (s0, t0), (s1, t1) = _pair((0, 0)), _pair((6, 6))
    examples = [Example("edit", TEXTS[0], source=s0), Example("t2i", TEXTS[2]), Example("edit", TEXTS[1], source=s1)]
    batch = make_batch(model, torch.stack([t0, s1, t1]), examples)
    at = batch.ground >= 0
    assert not at[1].any()  # text-to-image: nothing to ground
    for row, (src, tgt) in ((0, (s0, t0)), (2, (s1, t1))):
        read = (batch.image_id[row] >= 0) & ~batch.generated()[row]
        assert torch.equal(at[row], read)
        torch.testing.assert_close(batch.ground[row, at[row]], changed_cells(src, tgt, model.layout.read_grid))


@pytest.mark.parametrize("preset", GROUNDED)
def test_the_grounding_loss_trains_the_head_and_the_trunk(digits_dir, preset):
    model, without = _model(digits_dir, preset).train(), _model(digits_dir, preset, weight=0.0).train()
    assert without.grounding is None
    model.load_state_dict(without.state_dict(), strict=False)  # the same trunk; only the head is extra
    (s0, t0), (s1, t1) = _pair((0, 0)), _pair((4, 2))
    examples = [Example("edit", TEXTS[0], source=s0), Example("edit", TEXTS[1], source=s1)]
    grads, metrics = [], []
    for m in (model, without):
        loss, named = m(make_batch(m, torch.stack([t0, t1]), examples), torch.Generator().manual_seed(0))
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.backbone.layers[0].parameters()]))
        metrics.append(named)
    assert metrics[0]["ground_loss"] > 0 and 0 <= metrics[0]["ground_acc"] <= 1
    assert metrics[1].keys() & {"ground_loss", "ground_acc"} == set()
    assert model.grounding.weight.grad.abs().sum() > 0
    assert not torch.allclose(*grads), "the grounding loss does not reach the trunk"


def test_a_batch_without_edits_still_uses_the_head_at_zero_loss(digits_dir):
    model = _model(digits_dir).train()
    loss, metrics = model(make_batch(model, torch.rand(2, 1, 8, 8) * 2 - 1, [Example("t2i", TEXTS[2])] * 2))
    assert metrics["ground_loss"] == 0
    loss.backward()
    assert model.grounding.weight.grad is not None and not model.grounding.weight.grad.any()


def test_the_head_learns_which_cells_the_instruction_names(digits_dir):
    """Two instructions on one source, each changing its own corner: the source's cells can only be told apart
    by the instruction the source was read after; a few steps on the batch fit it."""
    model = _model(digits_dir).train()
    source = torch.rand(1, 8, 8) * 2 - 1
    targets = source.repeat(2, 1, 1, 1)
    targets[0, :, :2, :2] += 0.5
    targets[1, :, 6:, 6:] += 0.5
    batch = make_batch(
        model, targets, [Example("edit", TEXTS[0], source=source), Example("edit", TEXTS[1], source=source)]
    )
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss, metrics = model(batch, torch.Generator().manual_seed(0))
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert metrics["ground_acc"] == 1, metrics


def _keeping(digits_dir, preset: str = "transfusion"):
    model = _model(digits_dir, preset).eval()
    with torch.no_grad():  # zero-initialised heads pass nothing at first: small weights, as some training gives
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.02)
    with_sampling(model.cfg, ["edit_keep=0.5", "steps=3", "cfg=2"])
    return model


def test_keep_needs_a_writer_that_can_and_a_grounding_head(digits_dir):
    with pytest.raises(ConfigError, match="latent, ar-codes and masked-codes writers can"):
        with_sampling(_model(digits_dir, "mar").cfg, ["edit_keep=0.5"])
    with pytest.raises(ConfigError, match="model.edit_grounding = 0"):
        with_sampling(_model(digits_dir, weight=0.0).cfg, ["edit_keep=0.5"])
    model = _keeping(digits_dir)
    with pytest.raises(ValueError, match="edits only"):
        model.ctx.source_changes(["a red circle"])


@pytest.mark.parametrize("preset", ["transfusion", "chameleon", "show-o"])
def test_kept_cells_are_the_source_and_the_rest_is_made_around_them(digits_dir, preset):
    """With a fixed verdict of the head: the output's kept cells are exactly the source's latent (or code); the other
    cells differ from an edit that keeps nothing, since the model saw the source there; a verdict of "all changed"
    is the plain edit, bit for bit."""
    model = _keeping(digits_dir, preset)
    writer, cells = model.writer, math.prod(model.writer.grid)
    sources = torch.rand(2, 1, 8, 8) * 2 - 1
    verdict = torch.ones(2, cells)
    verdict[:, : cells // 2] = 0  # the first half unchanged: kept
    model.ctx.source_changes = lambda prompts: verdict
    made: list[torch.Tensor] = []  # what the writer decodes: latents [B, n, P] or codes [B, n]
    decode = writer.codec.decode
    writer.codec.decode = lambda x: made.append(x.clone()) or decode(x)

    def edit(keep: float) -> torch.Tensor:
        with_sampling(model.cfg, [f"edit_keep={keep}"])
        model.edit(sources, TEXTS[:2], generator=torch.Generator().manual_seed(0))
        return made[-1]

    kept, plain = edit(0.5), edit(0.0)
    source = writer.codec.encode(sources)
    assert torch.equal(kept[:, : cells // 2], source[:, : cells // 2])
    assert not torch.equal(kept[:, cells // 2 :], plain[:, cells // 2 :]), "the model did not see the kept cells"
    verdict.fill_(1.0)
    assert torch.equal(edit(0.5), plain)


def test_the_head_decides_what_is_kept(digits_dir):
    """Through the real head: a bias far below zero keeps every cell (the edit is the source's round trip through the
    codec), far above keeps none."""
    model = _keeping(digits_dir)
    sources = torch.rand(2, 1, 8, 8) * 2 - 1
    codec = model.writer.codec
    with torch.no_grad():
        model.grounding.weight.zero_()
        model.grounding.bias.fill_(-20.0)
        assert (model.ctx.source_changes([ImagePrompt(TEXTS[0], source=s) for s in sources]) < 1e-6).all()
        edited = model.edit(sources, TEXTS[:2], generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(edited, codec.decode(codec.encode(sources)).clamp(-1, 1))
        model.grounding.bias.fill_(20.0)
        edited = model.edit(sources, TEXTS[:2], generator=torch.Generator().manual_seed(0))
        with_sampling(model.cfg, ["edit_keep=0"])
        torch.testing.assert_close(edited, model.edit(sources, TEXTS[:2], generator=torch.Generator().manual_seed(0)))
