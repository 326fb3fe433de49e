"""``writer.residual`` (latent writer): an edit's target is denoised as its latent minus its source's and decoded
as source + difference, so that what an edit leaves alone is zero for the model to produce."""

import torch

from conftest import tiny_preset
from unimm.models import UnifiedModel
from unimm.tasks import Example
from unimm.tokenizers.text import TextTokenizer
from unimm.train.stream import make_batch

TEXTS = ["make the circle blue", "remove the square", "a red circle"]


def _model(digits_dir, residual: bool) -> UnifiedModel:
    cfg = tiny_preset(digits_dir, "quick", **{"writer.residual": str(residual).lower(), "sample.steps": 2})
    torch.manual_seed(0)
    model = UnifiedModel(cfg, TextTokenizer.train(TEXTS, 300))
    model.prepare(torch.rand(32, 1, 8, 8) * 2 - 1, progress=False, captions=[TEXTS[2]] * 32)
    return model


def test_each_edit_target_knows_its_source_across_rows(digits_dir):
    model = _model(digits_dir, residual=True)
    sources, targets = torch.rand(2, 1, 8, 8) * 2 - 1, torch.rand(3, 1, 8, 8) * 2 - 1
    examples = [Example("edit", TEXTS[0], source=sources[0]), Example("t2i", TEXTS[2]),
                Example("edit", TEXTS[1], source=sources[1])]  # fmt: skip
    batch = make_batch(model, targets, examples)
    # images in order: row 0 source, target; row 1 target; row 2 source, target
    assert batch.image_base.tolist() == [-1, 0, -1, -1, 3]
    assert torch.equal(batch.images[1], targets[0]) and torch.equal(batch.images[0], sources[0])
    assert _model(digits_dir, residual=False).layout.link_source is False  # nothing aligned without it


def test_the_target_is_noised_as_the_difference_of_latents(digits_dir):
    seen = {}
    for residual in (False, True):
        model = _model(digits_dir, residual)
        w = model.writer
        corrupt = w.corrupt
        w.corrupt = lambda x0, noise, t, r=residual, c=corrupt: seen.__setitem__(r, x0.clone()) or c(x0, noise, t)
        sources, targets = torch.rand(2, 1, 8, 8) * 2 - 1, torch.rand(2, 1, 8, 8) * 2 - 1
        examples = [Example("edit", TEXTS[0], source=sources[0]), Example("edit", TEXTS[1], source=sources[1])]
        loss, _ = model(make_batch(model, targets, examples), torch.Generator().manual_seed(0))
        loss.backward()
        assert torch.isfinite(loss)
    with torch.no_grad():
        src, tgt = w.codec.encode(sources), w.codec.encode(targets)
    # images: source 0, target 0, source 1, target 1; sources stay as they are, targets become differences
    torch.testing.assert_close(seen[False], torch.stack([src[0], tgt[0], src[1], tgt[1]]))
    torch.testing.assert_close(seen[True], torch.stack([src[0], tgt[0] - src[0], src[1], tgt[1] - src[1]]))


def test_sampling_adds_the_source_latent_and_only_to_edits(digits_dir):
    """A sampler that draws a zero difference returns each source through the codec; text-to-image is unchanged."""
    model = _model(digits_dir, residual=True).eval()
    w = model.writer
    w.objective.run_sampler = lambda sampler, fn, noise, *a, **k: torch.zeros_like(noise)
    sources = torch.rand(2, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        edited = model.edit(sources, TEXTS[:2])
        torch.testing.assert_close(edited, w.codec.decode(w.codec.encode(sources)).clamp(-1, 1))
        blank = w.codec.decode(torch.zeros_like(w.codec.encode(sources))).clamp(-1, 1)
        torch.testing.assert_close(model.generate([TEXTS[2]] * 2), blank)
