"""``model.source_link``: each cell of an edit's target gets a zero-initialised projection of its source cell's input,
in training and in every writer's sampler, at the same place in both."""

import pytest
import torch

from conftest import tiny_preset
from unimm.models import UnifiedModel
from unimm.tasks import Example, ImagePrompt
from unimm.tokenizers.text import TextTokenizer
from unimm.train.stream import make_batch

TEXTS = ["make the circle blue", "remove the square", "a red circle"]
GREEDY = {"sample.image_temperature": 0, "sample.choice_temperature": 0, "sample.steps": 3, "sample.cfg": 1.0}
LINKED = ["transfusion", "chameleon", "show-o"]  # one preset per writer kind: latent, ar-codes, masked-codes


def _model(digits_dir, preset: str, **extra) -> UnifiedModel:
    cfg = tiny_preset(digits_dir, preset, **{"model.source_link": True, **GREEDY, **extra})
    torch.manual_seed(0)
    model = UnifiedModel(cfg, TextTokenizer.train(TEXTS, 300))
    model.prepare(torch.rand(32, 1, 8, 8) * 2 - 1, progress=False, captions=[TEXTS[2]] * 32)
    return model


def _randomise_link(model: UnifiedModel) -> None:
    torch.nn.init.normal_(model.source_link.weight, std=0.5)


def _wake(model: UnifiedModel) -> None:
    """Zero-initialised heads and rows pass nothing at first (no gradient back, the same output for any input):
    give them small random weights, as some training would."""
    with torch.no_grad():
        for p in model.parameters():
            if p is not model.source_link.weight and not p.any():
                p.normal_(std=0.02)


@pytest.mark.parametrize("preset", LINKED)
def test_the_link_starts_at_zero_and_learns_from_edits(digits_dir, preset):
    model = _model(digits_dir, preset).train()
    assert model.source_link is not None and not model.source_link.weight.any()
    _wake(model)
    sources, targets = torch.rand(2, 1, 8, 8) * 2 - 1, torch.rand(2, 1, 8, 8) * 2 - 1
    examples = [Example("edit", TEXTS[0], source=sources[0]), Example("edit", TEXTS[1], source=sources[1])]
    loss, _ = model(make_batch(model, targets, examples), torch.Generator().manual_seed(0))
    loss.backward()
    assert model.source_link.weight.grad.abs().sum() > 0
    model.zero_grad()  # a batch without edits still uses the link (every process of a distributed step does)
    loss, _ = model(make_batch(model, targets, [Example("t2i", TEXTS[2])] * 2), torch.Generator().manual_seed(0))
    loss.backward()
    assert model.source_link.weight.grad is not None and not model.source_link.weight.grad.any()


@pytest.mark.parametrize("preset", LINKED)
def test_a_target_cell_gets_exactly_its_source_cell_through_the_link(digits_dir, preset):
    model = _model(digits_dir, preset)
    _randomise_link(model)
    batch = model.pack([ImagePrompt(TEXTS[0], source=torch.zeros(1, 8, 8)).spans(model.layout, model.tokenizer)])
    x = torch.randn(*batch.tokens.shape, model.cfg.model.dim)
    src = (batch.image_id[0] == 0).nonzero()[:, 0]
    tgt = (batch.image_id[0] == 1).nonzero()[:, 0] - int(model.writer.causal)
    expect = x.clone()
    expect[0, tgt] += x[0, src] @ model.source_link.weight.T
    torch.testing.assert_close(model.ctx.linked(x, batch), expect)


@pytest.mark.parametrize("preset", LINKED)
def test_edits_sample_through_the_link(digits_dir, preset):
    model = _model(digits_dir, preset).eval()
    _wake(model)
    seen: list[torch.Tensor] = []  # the backbone's output in the sampler's first pass
    model.backbone.register_forward_hook(lambda module, args, out: seen.append(out[0].clone()))
    source = torch.rand(1, 1, 8, 8) * 2 - 1
    model.edit(source, TEXTS[0], generator=torch.Generator().manual_seed(0))
    before, seen[:] = seen[0], []
    _randomise_link(model)
    model.edit(source, TEXTS[0], generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(before, seen[0]), "the sampler does not use the link"


def test_next_code_sampling_links_as_training_does(digits_dir):
    """Greedy codes sampled with a KV cache (and without) are the argmax of the teacher-forced training forward over
    the same codes: the cached steps add each source cell where training adds it."""
    model = _model(digits_dir, "chameleon").eval()
    _randomise_link(model)
    sources = torch.rand(2, 1, 8, 8) * 2 - 1
    prompts = [ImagePrompt(t, source=s) for t, s in zip(TEXTS[:2], sources, strict=True)]
    sampled, decode = [], model.writer.decode
    model.writer.decode = lambda codes: sampled.append(codes) or decode(codes)
    model.edit(sources, TEXTS[:2])
    model.edit(sources, TEXTS[:2], use_cache=False)
    assert torch.equal(sampled[0], sampled[1])
    ctx = model.ctx
    batch, base = ctx.generation_batch(prompts, guided=False)
    x = base.masked_scatter(batch.generated().unsqueeze(-1), model.writer.embed_codes(ctx, sampled[0]))
    hidden, _ = ctx.run(x, batch)
    logits = model.writer.next_code_logits(ctx, hidden, batch.generated())
    assert torch.equal(logits.argmax(-1).view_as(sampled[0]), sampled[0])


def test_a_reader_of_another_grid_cannot_link(digits_dir):
    with pytest.raises(ValueError, match="source_link"):
        _model(digits_dir, "janus")  # ViT patches of 4 pixels, VQ codes of 2
