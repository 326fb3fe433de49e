"""The discrete-token strategies as presets: chameleon, janus, show-o, unidisc (one tiny run each),
plus the properties their samplers promise: cached == uncached, batched == one-by-one."""

import math

import pytest
import torch

from conftest import tiny_preset
from unimm.config import load_config
from unimm.models import UnifiedModel
from unimm.models.contracts import PrepareData
from unimm.models.readers import SharedReader, ViTReader
from unimm.models.writers.codes import ARCodeWriter, MaskedCodeWriter
from unimm.objectives.text import ARText, MaskedText, MaskedTextSettings
from unimm.sequence import IGNORE
from unimm.tasks import Example
from unimm.tokenizers.text import TextTokenizer
from unimm.train.loop import make_batch, train

TINY = {"sample.max_new_tokens": 16, "sample.steps": 4}  # the VQ tokenizer and the ViT: conftest.TINY_PARTS
PARTS = {  # preset -> (writer, reader, text objective, codes in the text vocabulary?)
    "chameleon": (ARCodeWriter, SharedReader, ARText, True),
    "janus": (ARCodeWriter, ViTReader, ARText, False),
    "show-o": (MaskedCodeWriter, SharedReader, ARText, True),
    "unidisc": (MaskedCodeWriter, SharedReader, MaskedText, True),
}
EXAMPLES = [
    Example("t2i", "a handwritten seven"),
    Example("t2i", "the digit 7", drop_condition=True),
    Example("caption", "a handwritten seven"),
    Example("vqa", "what digit is this?", "seven"),
]


def _cfg(digits_dir, preset: str, **extra):
    return tiny_preset(digits_dir, preset, **{**TINY, **extra})


def _model(digits_dir, preset: str, **extra) -> UnifiedModel:
    cfg = _cfg(digits_dir, preset, **extra)
    tok = TextTokenizer.train(["a handwritten seven", "what digit is this?", "seven", "the digit 7"], 300)
    torch.manual_seed(0)
    model = UnifiedModel(cfg, tok)
    model.prepare(torch.rand(32, 1, 8, 8) * 2 - 1, progress=False)
    return model


@pytest.mark.parametrize("preset", sorted(PARTS))
def test_preset_trains_captions_and_generates(digits_dir, tmp_path, preset):
    """End to end: ``unimm train configs/<preset>.toml`` at tiny size, reload, caption, answer, generate."""
    out = train(_cfg(digits_dir, preset), tmp_path / preset, progress=False)
    model = UnifiedModel.from_pretrained(out)
    writer, reader, text, shared = PARTS[preset]
    assert isinstance(model.writer, writer) and isinstance(model.reader, reader) and isinstance(model.text, text)
    codes = model.writer.num_codes
    extra = (codes + 1 if shared else 0) + (1 if text is MaskedText else 0)
    assert model.backbone.cfg.vocab_size == model.text_vocab + extra
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    captions = model.caption(images)
    answers = model.caption(images, question="what digit is this?")
    assert len(captions) == len(answers) == 3 and all(isinstance(c, str) for c in captions + answers)
    out_images = model.generate(["a handwritten seven", "the digit 1"], generator=torch.Generator().manual_seed(0))
    assert out_images.shape == (2, 1, 8, 8) and out_images.min() >= -1 and out_images.max() <= 1


@pytest.mark.parametrize("preset", sorted(PARTS))
def test_loss_backprops_into_every_trained_part(digits_dir, preset):
    model = _model(digits_dir, preset)
    loss, metrics = model(make_batch(model, torch.rand(4, 1, 8, 8) * 2 - 1, EXAMPLES), torch.Generator().manual_seed(0))
    assert metrics["text_loss"] > 0 and metrics["image_loss"] > 0 and torch.isfinite(loss)
    loss.backward()
    assert model.backbone.embed_tokens.weight.grad.abs().sum() > 0
    head = model.backbone.lm_head.weight.grad
    assert head[: model.text_vocab].abs().sum() > 0
    if PARTS[preset][3]:  # the image codes' rows of the shared head learn from the image loss
        assert head[model.text_vocab : model.text_vocab + model.writer.num_codes].abs().sum() > 0
    else:
        assert model.writer.head.weight.grad.abs().sum() > 0 and model.writer.embed.weight.grad.abs().sum() > 0
        assert model.reader.vit.patch.weight.grad.abs().sum() > 0
    assert model.writer.code_proj.weight.grad.abs().sum() > 0  # codebook vectors feed the code embeddings
    assert all(p.grad is None and not p.requires_grad for p in model.writer.codec.parameters())  # frozen VQ


@pytest.mark.parametrize("preset", ["chameleon", "janus", "show-o"])
def test_caption_cached_equals_uncached(digits_dir, preset):
    model = _model(digits_dir, preset).eval()
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    for question in (None, "what digit is this?"):
        assert model.caption(images, question, max_new_tokens=6) == model.caption(
            images, question, max_new_tokens=6, use_cache=False
        )


@pytest.mark.parametrize("preset", ["chameleon", "janus"])
def test_ar_image_generation_cached_equals_uncached(digits_dir, preset):
    model = _model(digits_dir, preset).eval()
    prompts = ["a handwritten seven", "seven"]
    a = model.generate(prompts, generator=torch.Generator().manual_seed(0))
    b = model.generate(prompts, generator=torch.Generator().manual_seed(0), use_cache=False)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("preset", sorted(PARTS))
def test_batched_sampling_equals_one_by_one(digits_dir, preset):
    """Deterministic samplers (greedy codes, no Gumbel noise): a batch of mixed-length prompts and
    questions gives what each gives alone."""
    model = _model(digits_dir, preset, **{"sample.image_temperature": 0, "sample.choice_temperature": 0}).eval()
    prompts = ["a handwritten seven", "seven", "the digit 7"]
    batched = model.generate(prompts)
    torch.testing.assert_close(batched, torch.cat([model.generate([p]) for p in prompts]))
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    for question in (None, "what digit is this?"):
        alone = [model.caption(images[i : i + 1], question)[0] for i in range(3)]
        assert model.caption(images, question) == alone


def test_ar_codes_sampling_stays_inside_the_image_vocabulary(digits_dir):
    """The shared-vocabulary head is sliced to the codes: even when a text token dominates the full head,
    the sampled image has exactly h*w valid codes."""
    model = _model(digits_dir, "chameleon").eval()
    with torch.no_grad():
        model.backbone.lm_head.weight[model.tokenizer.eos_id] += 50.0  # text would always win unconstrained
    seen = []
    decode = model.writer.decode
    model.writer.decode = lambda codes: seen.append(codes) or decode(codes)
    model.generate(["seven"], generator=torch.Generator().manual_seed(0))
    (codes,) = seen
    assert codes.shape == (1, math.prod(model.writer.grid))
    assert codes.min() >= 0 and codes.max() < model.writer.num_codes


def test_masked_text_corrupts_only_answer_tokens(digits_dir):
    """``text.joint = false``: only the answer is masked (``test_unidisc_joint.py``: the whole example)."""
    model = _model(digits_dir, "unidisc", **{"text.joint": "false"})
    batch = make_batch(model, torch.rand(4, 1, 8, 8) * 2 - 1, EXAMPLES)
    tokens, state = model.text.corrupt(batch, torch.Generator().manual_seed(0))
    changed = tokens != batch.tokens
    assert torch.equal(changed, state.masked) and (tokens[changed] == model.text.mask_id).all()
    answer_len = model.layout.answer_len
    assert changed[:2].sum() == 0  # t2i rows: the prompt is a condition, never masked
    assert changed[2:].sum() > 0 and (changed[2:].sum(1) <= answer_len).all()
    v = batch.valid[0]
    assert batch.attn_mask[0][v][:, v].all()  # masked text: the whole sequence attends bidirectionally


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_masked_text_mask_ratio_is_beta_alpha_1(alpha):
    """text.mask_alpha: answer mask ratios t ~ Beta(alpha, 1), CDF t**alpha (1 = uniform)."""
    t = (
        MaskedText(MaskedTextSettings(answer_len=8, mask_alpha=alpha))
        .mask_ratio(200_000, torch.Generator().manual_seed(0))
        .flatten()
    )
    assert t.min() >= 0 and t.max() <= 1
    assert abs(float(t.mean()) - alpha / (alpha + 1)) < 0.005
    for q in (0.25, 0.5, 0.75):
        assert abs(float((t <= q).float().mean()) - q**alpha) < 0.005


def test_masked_text_mask_alpha_reaches_corruption(digits_dir):
    """The configured alpha is what ``corrupt`` uses: a high alpha masks nearly the whole answer."""
    shares = {}
    for alpha in (1.0, 50.0):
        model = _model(digits_dir, "unidisc", **{"text.mask_alpha": alpha, "text.joint": "false"})
        assert model.text.settings.mask_alpha == alpha
        batch = make_batch(model, torch.rand(200, 1, 8, 8) * 2 - 1, EXAMPLES * 50)
        answer = torch.nn.functional.pad(batch.targets[:, :-1] != IGNORE, (1, 0))
        _, state = model.text.corrupt(batch, torch.Generator().manual_seed(0))
        shares[alpha] = float(state.masked.sum() / answer.sum())
    assert 0.35 < shares[1.0] < 0.65 and shares[50.0] > 0.9


def test_pretrained_vq_tokenizer_is_loaded_frozen_and_its_geometry_adopted(digits_dir, tmp_path):
    from unimm.config import TokenizerConfig
    from unimm.tokenizers.train import load_image_tokenizer, train_tokenizer

    sets = [f"data.path={str(digits_dir)!r}", "tokenizer.codebook_size=12", "tokenizer.code_dim=4",
            "tokenizer.hidden=8", "tokenizer.downsample=2", "train.steps=3"]  # fmt: skip
    train_tokenizer(load_config(None, sets, schema=TokenizerConfig), tmp_path / "tok", progress=False)
    out = train(
        _cfg(digits_dir, "chameleon", **{"codec.tokenizer": f'"{tmp_path / "tok"}"'}), tmp_path / "run", progress=False
    )
    model = UnifiedModel.from_pretrained(out)
    assert model.cfg.codec.codebook == 12 and model.cfg.codec.dim == 4 and model.writer.grid == (1, 4, 4)
    reference = load_image_tokenizer(tmp_path / "tok").state_dict()
    for k, v in model.writer.codec.vq.state_dict().items():
        assert torch.equal(v, reference[k]), k


def test_too_short_fixed_answer_is_a_clear_error(digits_dir, tmp_path):
    with pytest.raises(ValueError, match=r"text.answer_len = 2 is the fixed answer length.*text.answer_len >="):
        train(_cfg(digits_dir, "unidisc", **{"text.answer_len": 2}), tmp_path / "run", progress=False)


def test_vit_pretraining_learns_the_labels_before_the_llm_trains(digits_dir):
    from unimm.data import load_split

    data = load_split(digits_dir, "train", None, None)
    cfg = _cfg(digits_dir, "janus", **{"reader.pretrain_steps": 150, "reader.patch": 2})
    tok = TextTokenizer.train(["a handwritten seven", "seven"], 300)
    torch.manual_seed(0)
    model = UnifiedModel(cfg, tok)
    before = {k: v.clone() for k, v in model.reader.state_dict().items()}
    stats = model.prepare(data.images, data.labels, progress=False)
    assert stats["vit_pretrain_train_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert any(not torch.equal(v, model.reader.state_dict()[k]) for k, v in before.items())
    assert set(model.reader.state_dict()) == set(before)  # the classification head is not kept
    assert model.reader.prepare(PrepareData(data.images, None, progress=False)) == {}  # no labels: nothing to learn


@pytest.mark.parametrize("preset", ["chameleon", "janus"])
def test_codes_start_as_projections_of_their_codebook_vectors(digits_dir, preset):
    model = _model(digits_dir, preset)
    w = model.writer
    codes = torch.arange(w.num_codes)
    expected = w.code_proj(w.codec.vq.quantizer.embed(codes))
    torch.testing.assert_close(w.embed_codes(model.ctx, codes), expected)
    mask = w.embed_codes(model.ctx, torch.tensor([w.mask_code]))
    assert not torch.allclose(mask, w.code_proj.bias)  # [MASK] keeps an embedding of its own


@pytest.mark.parametrize("connector", ["linear", "mlp", "resampler", "qformer"])
def test_every_connector_feeds_the_language_model(digits_dir, connector):
    """``reader.kind = "vit"`` with each ``[reader.connector]`` kind: a read image takes the connector's token count."""
    pooled = connector in ("resampler", "qformer")
    section = f'{{kind = "{connector}"' + (", queries = 6, heads = 2}" if pooled else "}")
    model = _model(digits_dir, "janus", **{"reader.connector": section})
    assert model.cfg.reader.connector.kind == connector
    assert model.layout.read_grid == ((1, 2, 3) if pooled else (1, *(model.reader.vit.grid,) * 2))
    batch = make_batch(model, torch.rand(4, 1, 8, 8) * 2 - 1, EXAMPLES)
    loss, _ = model(batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert next(model.reader.connector.parameters()).grad.abs().sum() > 0
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    assert model.eval().caption(images, max_new_tokens=4) == model.caption(images, max_new_tokens=4, use_cache=False)


@pytest.mark.parametrize("preset", ["show-o", "unidisc"])
def test_generation_prompt_is_the_training_layout(digits_dir, preset):
    """The sequence a sampler fills in is token for token, position for position and mask for mask the
    t2i training sequence (under full attention a missing trailing <eos> cost unidisc 34 % -> 98 %)."""
    model = _model(digits_dir, preset)
    train_batch = make_batch(model, torch.rand(1, 1, 8, 8) * 2 - 1, [Example("t2i", "a handwritten seven")])
    gen_batch, _ = model.ctx.generation_batch(["a handwritten seven"], guided=False)
    assert torch.equal(train_batch.tokens, gen_batch.tokens)
    assert torch.equal(train_batch.positions, gen_batch.positions)
    assert torch.equal(train_batch.attn_mask, gen_batch.attn_mask)


@pytest.mark.parametrize(
    ("preset", "key", "value"),
    [
        ("chameleon", "image_temperature", 0.0),  # ar codes: sampling temperature (0 = greedy)
        ("chameleon", "image_top_k", 2),
        ("show-o", "choice_temperature", 0.0),  # maskgit: Gumbel noise on the confidences
        ("mar", "head_steps", 2),  # mar: steps of the per-patch diffusion head
        ("mar", "image_temperature", 0.5),
    ],
)
def test_sampling_settings_are_read_when_sampling_runs(digits_dir, preset, key, value):
    """``cfg.sample`` changed after the model is built (as after ``from_pretrained``) changes what
    ``generate`` draws: no part keeps a copy of a sampling setting from ``__init__``."""
    model = _model(digits_dir, preset).eval()
    prompts = ["a handwritten seven", "seven"]

    def sample() -> torch.Tensor:
        return model.generate(prompts, steps=2, generator=torch.Generator().manual_seed(0))

    before = sample()
    torch.testing.assert_close(sample(), before)  # same settings, same generator: same images
    setattr(model.cfg.sample, key, value)
    assert not torch.allclose(sample(), before)


def test_text_steps_are_read_when_captioning_runs(digits_dir, monkeypatch):
    """Masked text: ``sample.text_steps`` set after the model is built sets the unmasking rounds."""
    import unimm.objectives.text as text

    model = _model(digits_dir, "unidisc").eval()
    seen, original = [], text.maskgit_sample
    monkeypatch.setattr(text, "maskgit_sample", lambda *a, **kw: seen.append(kw["steps"]) or original(*a, **kw))
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    model.caption(images)
    model.cfg.sample.text_steps = 3
    model.caption(images)
    assert seen == [model.text.answer_len, 3]  # None = one round per answer token
