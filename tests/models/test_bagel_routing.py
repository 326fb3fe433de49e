"""``layers.route``: the bagel preset routes as BAGEL does (text and ViT tokens -> understanding branch 0,
generated VAE latents -> generation branch 1) in training, captioning and generation; routing by modality,
the default, is unchanged."""

import math
from contextlib import contextmanager

import torch

from conftest import tiny_preset
from unimm.models import UnifiedModel
from unimm.tasks import Example
from unimm.tokenizers.text import TextTokenizer
from unimm.train.loop import make_batch, train

TINY = {"sample.max_new_tokens": 4, "sample.steps": 2}
EXAMPLES = [Example("caption", "seven"), Example("t2i", "a handwritten seven")]  # one read image, one generated


def _model(digits_dir, **extra) -> UnifiedModel:
    cfg = tiny_preset(digits_dir, "bagel", **TINY, **extra)
    torch.manual_seed(0)
    return UnifiedModel(cfg, TextTokenizer.train(["a handwritten seven", "seven"], 300))


def _images(n: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


@contextmanager
def recorded_ids(model: UnifiedModel):
    """The ids every backbone pass gives its blocks (the same for all of them), in call order."""
    seen: list[torch.Tensor] = []
    hook = model.backbone.layers[0].register_forward_pre_hook(lambda block, args: seen.append(args[1].clone()))
    try:
        yield seen
    finally:
        hook.remove()


def _branch_grads(model: UnifiedModel, branch: int) -> float:
    grads = [p.grad for b in model.backbone.layers for p in b.branches[branch].parameters()]
    return sum(float(g.abs().sum()) for g in grads if g is not None)


def test_bagel_sends_text_and_vit_tokens_to_branch_0_and_generated_latents_to_branch_1(digits_dir):
    model = _model(digits_dir)
    assert model.cfg.layers.route == "role" and model.cfg.reader.kind == "vit"
    batch = make_batch(model, _images(2), EXAMPLES)
    img, gen = batch.image_id >= 0, batch.generated()
    assert img[0].any() and not gen[0].any() and gen[1].any()  # row 0 reads its image, row 1 generates
    with recorded_ids(model) as seen:
        model(batch, torch.Generator().manual_seed(0))
    ids = seen[0]
    assert (ids[~img] == 0).all()  # text (and padding)
    assert (ids[0][img[0]] == 0).all()  # the ViT tokens of the image read
    assert (ids[1][img[1]] == 1).all()  # the VAE latents being generated
    assert torch.equal(ids, model.ctx.branch_ids(batch))

    # an understanding batch trains only the understanding branch; a generation batch both
    model.zero_grad()
    model(make_batch(model, _images(1), EXAMPLES[:1]), torch.Generator().manual_seed(0))[0].backward()
    assert _branch_grads(model, 0) > 0 and _branch_grads(model, 1) == 0
    model.zero_grad()
    model(make_batch(model, _images(1), EXAMPLES[1:]), torch.Generator().manual_seed(0))[0].backward()
    assert _branch_grads(model, 0) > 0 and _branch_grads(model, 1) > 0


def test_default_route_is_the_modality_as_before(digits_dir):
    """Without ``route`` (every other preset, every checkpoint saved before it existed) the blocks get the
    modality: ViT tokens in the image branch, next to the generated latents."""
    model = _model(digits_dir, layers='{kind = "mot"}')
    assert model.cfg.layers.route == "modality"
    batch = make_batch(model, _images(2), EXAMPLES)
    with recorded_ids(model) as seen:
        model(batch, torch.Generator().manual_seed(0))
    assert torch.equal(seen[0], batch.modality) and (seen[0][0][batch.image_id[0] >= 0] == 1).all()
    model.zero_grad()
    model(make_batch(model, _images(1), EXAMPLES[:1]), torch.Generator().manual_seed(0))[0].backward()
    assert _branch_grads(model, 1) > 0  # the image read trains the image branch


def test_bagel_trains_captions_and_generates_with_role_routing(digits_dir, tmp_path):
    cfg = tiny_preset(digits_dir, "bagel", **TINY, **{"train.steps": 2, "train.save_every": 2})
    model = UnifiedModel.from_pretrained(train(cfg, tmp_path / "bagel", progress=False))
    assert model.cfg.layers.route == "role"  # saved with the checkpoint

    with recorded_ids(model) as seen:  # the KV-cached prompt pass, then one text token per step
        cached = model.caption(_images(2), max_new_tokens=4)
    assert seen[0].shape[1] > math.prod(model.layout.read_grid)  # the ViT tokens are in it
    assert all((ids == 0).all() for ids in seen)
    assert model.caption(_images(2), max_new_tokens=4, use_cache=False) == cached

    prompts = ["a handwritten seven", "seven"]
    with recorded_ids(model) as seen:  # every flow step runs prompts and their unconditional twins (CFG)
        out = model.generate(prompts, cfg_scale=3.0, steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    batch, _ = model.ctx.generation_batch(prompts, guided=True)
    assert len(seen) == 2 and all(torch.equal(ids, (batch.image_id >= 0).long()) for ids in seen)
