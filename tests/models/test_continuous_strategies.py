"""The continuous strategies with parts of their own: ``mar`` (masked autoregression + per-patch diffusion
head) and ``connector`` (query tokens -> a separate DiT decoder), one tiny run each plus their promises."""

import pytest
import torch

from conftest import tiny_preset
from unimm.models import UnifiedModel
from unimm.models.diffusion_head import DiffusionHead
from unimm.models.writers.connector import ConnectorWriter
from unimm.models.writers.mar import MARWriter
from unimm.nn import onednn_linear
from unimm.samplers.guidance import guide
from unimm.samplers.mar import generation_order, group_sizes, order_mask, training_mask
from unimm.tasks import Example
from unimm.tokenizers.text import TextTokenizer
from unimm.train.loop import make_batch, train

# raw pixel patches instead of the presets' VAE; the ViT, head and decoder are made tiny by conftest.TINY_PARTS
TINY = {"codec": '{kind = "pixels", patch_size = 2}', "sample.steps": 3, "sample.head_steps": 3}
EXAMPLES = [
    Example("t2i", "a handwritten seven"),
    Example("t2i", "the digit 7", drop_condition=True),
    Example("caption", "a handwritten seven"),
    Example("vqa", "what digit is this?", "seven"),
]
VARIANTS = {  # name -> (preset, overrides)
    "mar": ("mar", {}),
    "mar-raster-flow": (
        "mar",
        {"writer.order": '"raster"', "denoiser": '{kind = "flow"}', "sample.sampler": '"flow_euler"'},
    ),  # fmt: skip
    "connector-frozen": ("connector", {}),
    "connector-joint-in-context": (
        "connector",
        {"writer.train": '"joint"', "writer.conditioning": '"in-context"'},
    ),  # fmt: skip
}


def _cfg(digits_dir, variant: str, **extra):
    preset, over = VARIANTS[variant]
    return tiny_preset(digits_dir, preset, **{**TINY, **over, **extra})


def _model(digits_dir, variant: str, **extra) -> UnifiedModel:
    cfg = _cfg(digits_dir, variant, **extra)
    texts = ["a handwritten seven", "what digit is this?", "seven", "the digit 7"]
    tok = TextTokenizer.train(texts, 300)
    torch.manual_seed(0)
    model = UnifiedModel(cfg, tok)
    model.prepare(torch.rand(16, 1, 8, 8) * 2 - 1, progress=False, captions=texts * 4)
    return model


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_preset_trains_captions_generates_and_reloads(digits_dir, tmp_path, variant):
    """End to end at tiny size: train, reload with ``from_pretrained``, caption, answer, generate."""
    out = train(_cfg(digits_dir, variant), tmp_path / variant, progress=False)
    model = UnifiedModel.from_pretrained(out)
    assert isinstance(model.writer, MARWriter if variant.startswith("mar") else ConnectorWriter)
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    captions, answers = model.caption(images), model.caption(images, question="what digit is this?")
    assert len(captions) == len(answers) == 3 and all(isinstance(c, str) for c in captions + answers)
    out_images = model.generate(["a handwritten seven", "the digit 1"], generator=torch.Generator().manual_seed(0))
    assert out_images.shape == (2, 1, 8, 8) and out_images.min() >= -1 and out_images.max() <= 1
    again = model.generate(["a handwritten seven", "the digit 1"], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out_images, again)  # seeded sampling is reproducible


@pytest.mark.parametrize("layers", ["dense", "moe", "modality-moe", "mot"])
@pytest.mark.parametrize("variant", ["mar", "connector-frozen"])
def test_runs_with_every_layer_kind(digits_dir, variant, layers):
    routed = ", experts = 4, top_k = 1" if layers.endswith("moe") else ""
    model = _model(digits_dir, variant, **{"layers": f'{{kind = "{layers}"{routed}}}'})
    assert model.cfg.layers.kind == layers
    loss, metrics = model(make_batch(model, torch.rand(4, 1, 8, 8) * 2 - 1, EXAMPLES))
    assert torch.isfinite(loss) and metrics["image_loss"] > 0
    loss.backward()
    assert model.eval().generate(["seven"], generator=torch.Generator().manual_seed(0)).shape == (1, 1, 8, 8)


def test_frozen_decoder_stays_bit_identical_while_queries_and_connector_learn(digits_dir, tmp_path, monkeypatch):
    """The real training loop: the decoder right after its pre-training equals the decoder saved at the end."""
    after_prepare = {}
    prepare = UnifiedModel.prepare

    def spy(self, *args, **kw):
        stats = prepare(self, *args, **kw)
        after_prepare.update({k: v.clone() for k, v in self.writer.state_dict().items()})
        return stats

    monkeypatch.setattr(UnifiedModel, "prepare", spy)
    out = train(_cfg(digits_dir, "connector-frozen", **{"train.steps": 3}), tmp_path / "run", progress=False)
    final = UnifiedModel.from_pretrained(out).writer.state_dict()
    frozen = [k for k in final if k.split(".")[0] in ("decoder", "captions", "codec")]
    assert frozen and all(torch.equal(after_prepare[k], final[k]) for k in frozen)
    assert not torch.equal(after_prepare["queries"], final["queries"])
    assert any(not torch.equal(after_prepare[k], final[k]) for k in final if k.startswith("connector."))


def test_frozen_decoder_is_pretrained_and_gets_gradients_only_through_its_input(digits_dir):
    model = _model(digits_dir, "connector-frozen", **{"writer.pretrain_steps": 20})
    w = model.writer
    assert all(not p.requires_grad for p in [*w.decoder.parameters(), *w.captions.parameters()])
    assert any(p.abs().sum() > 0 for p in w.decoder.out.parameters())  # pre-training moved the zero-init output
    loss, _ = model(make_batch(model, torch.rand(4, 1, 8, 8) * 2 - 1, EXAMPLES))
    loss.backward()
    assert all(p.grad is None for p in w.decoder.parameters())
    assert w.queries.grad.abs().sum() > 0 and w.connector.net[0].weight.grad.abs().sum() > 0
    assert model.backbone.embed_tokens.weight.grad.abs().sum() > 0


def test_joint_decoder_learns_with_the_language_model(digits_dir):
    model = _model(digits_dir, "connector-joint-in-context")
    assert model.writer.captions is None  # no separate pre-training, no caption embedding of its own
    loss, _ = model(make_batch(model, torch.rand(4, 1, 8, 8) * 2 - 1, EXAMPLES))
    loss.backward()
    assert model.writer.decoder.out.weight.grad.abs().sum() > 0 and model.writer.queries.grad.abs().sum() > 0


def test_finetuned_decoder_is_pretrained_then_learns_with_the_language_model(digits_dir):
    """``writer.train = "finetune"``: pre-trained alone like ``frozen`` (its steps are preparation, priced for the
    atlas's side budget), then the decoder gets gradients from the LLM's loss; the caption embedding stays fixed."""
    model = _model(digits_dir, "connector-frozen", **{"writer.train": '"finetune"', "writer.pretrain_steps": 20})
    w = model.writer
    assert [key for _, _, key in model.preparation()][-1] == "writer.pretrain_steps"
    assert any(p.abs().sum() > 0 for p in w.decoder.out.parameters())  # pre-training moved the zero-init output
    assert all(not p.requires_grad for p in w.captions.parameters())
    loss, _ = model(make_batch(model, torch.rand(4, 1, 8, 8) * 2 - 1, EXAMPLES))
    loss.backward()
    assert w.decoder.out.weight.grad.abs().sum() > 0 and w.queries.grad.abs().sum() > 0


def test_connector_needs_the_vit_reader_and_frozen_needs_pretraining(digits_dir):
    with pytest.raises(
        ValueError, match="writer kind 'connector' cannot embed the images it reads.*reader.kind = 'vit'"
    ):
        _cfg(digits_dir, "connector-frozen", **{"reader": '{kind = "shared"}'})
    for mode in ("frozen", "finetune"):
        with pytest.raises(ValueError, match=rf"writer.train = '{mode}' pre-trains the decoder: it needs writer"):
            _cfg(digits_dir, "connector-frozen", **{"writer.train": f'"{mode}"', "writer.pretrain_steps": 0})


def test_mar_masks_come_from_the_end_of_the_generation_order():
    gen = torch.Generator().manual_seed(0)
    raster = generation_order(5, 9, "raster")
    mask = training_mask(raster, gen)
    for row in mask:  # raster order: a masked suffix
        k = int(row.sum())
        assert 1 <= k <= 9 and row[9 - k :].all() and not row[: 9 - k].any()
    order = generation_order(3, 9, "random", gen)
    assert all(sorted(r.tolist()) == list(range(9)) for r in order)
    m = order_mask(order, torch.tensor([2, 5, 9]))
    for row, o, k in zip(m, order, (2, 5, 9), strict=True):
        assert set(torch.nonzero(row).flatten().tolist()) == set(o[9 - k :].tolist())


@pytest.mark.parametrize(("n", "steps"), [(49, 16), (9, 3), (9, 9), (9, 20), (4, 1)])
def test_mar_group_sizes_cover_every_position_once(n, steps):
    sizes = group_sizes(n, steps)
    assert sum(sizes) == n and all(s >= 1 for s in sizes) and len(sizes) == min(steps, n)


def test_mar_loss_reaches_head_and_transformer_only_at_masked_positions(digits_dir):
    model = _model(digits_dir, "mar")
    loss, metrics = model(make_batch(model, torch.rand(4, 1, 8, 8) * 2 - 1, EXAMPLES), torch.Generator().manual_seed(0))
    loss.backward()
    w = model.writer
    assert metrics["image_loss"] > 0
    assert w.head.out.weight.grad.abs().sum() > 0 and w.mask_token.grad.abs().sum() > 0
    assert w.embed.weight.grad.abs().sum() > 0  # known patches (and images read) enter through it


@pytest.mark.parametrize("variant", ["mar", "mar-raster-flow"])
def test_mar_one_group_equals_full_sequence_decoding(digits_dir, variant):
    """With one group, sampling is one transformer pass over the all-[MASK] image followed by the head at
    every position: the same numbers as running the full sequence by hand."""
    model = _model(digits_dir, variant).eval()
    w, prompts, scale = model.writer, ["a handwritten seven", "seven"], 2.0
    got = model.generate(prompts, cfg_scale=scale, steps=1, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        order = generation_order(2, w.n, w.settings.order, gen)
        batch, base = model.ctx.generation_batch(prompts, guided=True)
        img = batch.image_id >= 0
        masks = w.mask_token.expand(4, w.n, -1)
        hidden, _ = model.backbone(base.masked_scatter(img.unsqueeze(-1), masks), batch.positions, batch.modality,
                                   batch.attn_mask)  # fmt: skip
        z = hidden[img].view(4, w.n, -1)
        rows = torch.arange(2)[:, None]
        s = model.cfg.sample
        patches = w.sample_patches(
            z[:2][rows, order].flatten(0, 1),
            z[2:][rows, order].flatten(0, 1),
            scale,
            s.sampler,
            s.head_steps,
            s.image_temperature,
            gen,
        )
        full = torch.zeros(2, w.n, patches.shape[-1])
        full[rows, order] = patches.view(2, w.n, -1)
        expected = w.codec.decode(full).clamp(-1, 1)
    torch.testing.assert_close(got, expected)


def test_mar_fixed_patches_never_change_and_groups_follow_raster_order(digits_dir):
    """Raster order, one position per group: the k-th pass sees exactly the first k-1 positions known."""
    model = _model(digits_dir, "mar", **{"writer.order": '"raster"'}).eval()
    w, seen = model.writer, []
    embed = w.embed_patches
    w.embed_patches = lambda x0, known: seen.append(known.clone()) or embed(x0, known)
    model.generate(["seven"], cfg_scale=1.0, steps=w.n, generator=torch.Generator().manual_seed(0))
    assert len(seen) == w.n
    for k, known in enumerate(seen):
        assert known[0, :k].all() and not known[0, k:].any()


def test_mar_batched_sampling_equals_one_by_one_with_a_deterministic_head(digits_dir):
    """Raster order and DDIM (no noise after the first draw, which is scaled to zero): rows don't interact."""
    over = {"writer.order": '"raster"', "sample.sampler": '"ddim"', "sample.image_temperature": 0}
    model = _model(digits_dir, "mar", **over).eval()
    prompts = ["a handwritten seven", "seven", "the digit 7"]
    torch.testing.assert_close(model.generate(prompts), torch.cat([model.generate([p]) for p in prompts]))


def test_connector_batched_conditions_equal_one_by_one(digits_dir):
    """Mixed-length prompts in one batch give each prompt the decoder condition it gets alone."""
    model = _model(digits_dir, "connector-frozen").eval()
    prompts = ["a handwritten seven", "seven", "the digit 7"]
    with torch.no_grad():
        batched = model.writer.prompt_condition(model.ctx, prompts, guided=True)
        alone = [model.writer.prompt_condition(model.ctx, [p], guided=True) for p in prompts]
    torch.testing.assert_close(batched[:3], torch.cat([a[:1] for a in alone]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[3:], torch.cat([a[1:] for a in alone]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("onednn_min_rows", [1 << 30, 1])
@pytest.mark.parametrize("table_limit", [1 << 24, 0])
def test_mar_conditioned_head_equals_the_head_at_each_level(table_limit, onednn_min_rows):
    """The precomputed modulations (one table, or one level's row per call) give the head's forward, with the
    MLPs' products on MKL or on oneDNN with packed weights (the rows past the threshold)."""
    torch.manual_seed(0)
    head = DiffusionHead(patch_dim=6, cond_dim=10, width=16, depth=2)
    for p in head.parameters():  # the zero-initialised gates and output would hide the modulations
        torch.nn.init.normal_(p, std=0.3)
    level, z, x = torch.rand(5), torch.randn(7, 10), torch.randn(7, 6)
    with torch.no_grad():
        conditioned = head.prepared(level).condition(
            z,
            table_limit=table_limit,
            onednn_min_rows=onednn_min_rows,
            loop_table_limit=0,  # the PyTorch steps
            onednn=True,  # whether or not oneDNN beats MKL on this CPU
        )
        assert (conditioned.table is None) == (table_limit == 0)
        assert conditioned.onednn == (onednn_min_rows == 1 and onednn_linear.available())
        for i in range(5):
            expected = head(x, level[i].expand(7), z)
            torch.testing.assert_close(conditioned.run(x, torch.tensor([i])), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "flow_euler", "flow_heun"])
def test_mar_sampling_steps_equal_the_plain_head_forward(digits_dir, sampler):
    """sample_patches (modulations looked up by the sampler's time) draws what the head's forward would."""
    over = {"denoiser": '{kind = "flow"}', "sample.sampler": f'"{sampler}"'} if sampler.startswith("flow") else {}
    w = _model(digits_dir, "mar", **over).eval().writer
    for p in w.head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    z, z_uncond, scale = torch.randn(5, w.head.z_in.in_features), torch.randn(5, w.head.z_in.in_features), 2.5

    def plain(x_t, t):  # the head's own forward, guided
        out = w.head(torch.cat([x_t, x_t]), w.objective.level(t).repeat(2), torch.cat([z, z_uncond]))
        return guide(out, scale)

    with torch.no_grad():
        got = w.sample_patches(z, z_uncond, scale, sampler, 4, 0.9, torch.Generator().manual_seed(1))
        gen = torch.Generator().manual_seed(1)
        noise = torch.randn(5, w.codec.patch_dim, generator=gen) * 0.9
        kw = {"temperature": 0.9} if sampler == "ddpm" else {}
        expected = w.objective.run_sampler(sampler, plain, noise, 4, gen, **kw)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("beats", [False, True])
def test_mar_conditioned_head_takes_onednn_only_where_it_beats_blas(monkeypatch, beats):
    """By default the head's products go to oneDNN only on a CPU where it beats MKL (onednn_linear.beats_blas)."""
    from unimm.models import diffusion_head

    monkeypatch.setattr(diffusion_head, "beats_blas", lambda: beats)
    head = DiffusionHead(patch_dim=6, cond_dim=10, width=16, depth=2)
    with torch.no_grad():
        conditioned = head.prepared(torch.rand(3)).condition(torch.randn(5, 10), onednn_min_rows=1, loop_table_limit=0)
    on = beats and onednn_linear.available()
    assert conditioned.onednn == on and (conditioned.ada_mm is not torch.addmm) == on


def test_mar_tables_reuse_their_prepared_heads_memory_and_stale_ones_raise():
    """On the MKL path each condition() writes its table into the PreparedHead's one buffer (no fresh allocation
    per group); the values are those of a table of its own, and a head whose table was overwritten refuses."""
    torch.manual_seed(0)
    head = DiffusionHead(patch_dim=6, cond_dim=10, width=16, depth=2)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    level, z1, z2 = torch.rand(5), torch.randn(4, 10), torch.randn(3, 10)
    with torch.no_grad():
        prepared = head.prepared(level)
        first = prepared.condition(z1, onednn=False, loop_table_limit=0)
        assert first.shared and first.table.data_ptr() == prepared.table_memory(1).data_ptr()
        x = torch.randn(4, 6)
        want = head(x, level[2].expand(4), z1)
        torch.testing.assert_close(first.run(x, torch.tensor([2])), want, rtol=1e-5, atol=1e-5)
        second = prepared.condition(z2, onednn=False, loop_table_limit=0)
        assert second.table.data_ptr() == first.table.data_ptr()  # the same memory, no new table
        own = head.prepared(level).condition(z2, onednn=False, loop_table_limit=0).table
        assert torch.equal(second.table, own)
        with pytest.raises(RuntimeError, match="reused by a later condition"):
            first.run(x, torch.tensor([2]))
        assert prepared.ada_weight_t() is prepared.ada_weight_t()  # transposed once, not per group
