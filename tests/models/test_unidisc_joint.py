"""UniDisc's joint masking (``text.joint``) and its ELBO weight (``text.elbo_weight``) on tiny CPU models: one t
per example masks its words and its images' codes, structure is never masked, the 1/t weight is the MDLM form,
joint training is deterministic and learns, and the trained model still captions and generates. With the switch
off the preset trains exactly as before the switch existed (frozen figures)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from test_strategies import EXAMPLES, _model

from conftest import tiny_preset
from unimm.models import UnifiedModel
from unimm.objectives.joint import T_MIN, JointMask
from unimm.objectives.text import MaskedTextState
from unimm.sequence import IGNORE, IMAGE, TEXT
from unimm.train.loop import make_batch, train

# Produced by the code before text.joint existed (commit 68b8537), where the preset masked only answers and the
# generated images' codes: a forward pass on a fixed batch, and 8 tiny training steps (metrics.jsonl). Same
# machine, fp32, one thread: bit for bit; the tolerance is tests/train/test_regression_figure.py's, for other CPUs.
OFF_FORWARD = {"loss": 13.522825241088867, "text_loss": 6.276877403259277, "image_loss": 1.9381400346755981}
OFF_CURVE = [  # step: (loss, text_loss, image_loss)
    (13.11059, 5.78575, 3.07819),
    (12.12969, 5.40239, 2.64982),
    (11.92074, 5.37315, 2.34888),
    (10.70811, 4.85114, 2.01165),
    (9.20909, 4.60454, 0.0),
    (9.70391, 4.51534, 1.34648),
    (9.21008, 4.26712, 1.35168),
    (9.62539, 4.52354, 1.15661),
]
OFF_VAL = {"val_loss": 9.53359, "val_text_loss": 4.43536, "val_image_loss": 1.32575}
RTOL, ATOL = 1e-4, 1e-5
OFF = {"text.joint": "false"}
ALL_JOINT = {"text.joint_fraction": 1.0}  # the preset masks half its examples conditionally


def _training(steps: int) -> dict:
    """Tiny training of ``steps`` steps, one checkpoint at the end, no FLOP counting."""
    return {"train.flops_every": 0, "train.steps": steps, "train.save_every": steps}


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _words(model: UnifiedModel, batch) -> torch.Tensor:
    """[B, L] bool: text positions holding no special token (prompt, question, answer words and answer <eos>)."""
    special = torch.tensor(model.tokenizer.special_ids)
    return batch.valid & (batch.modality == TEXT) & ~torch.isin(batch.tokens, special)


def _answer(batch) -> torch.Tensor:
    return F.pad(batch.targets[:, :-1] != IGNORE, (1, 0))


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= RTOL * abs(b) + ATOL


def test_switch_off_trains_as_before_the_switch(digits_dir, tmp_path):
    """``text.joint = false``: the preset's forward pass and first 8 training steps are those of the code before."""
    model = _model(digits_dir, "unidisc", **OFF)
    _, metrics = model(make_batch(model, _images(8), EXAMPLES * 2), torch.Generator().manual_seed(1))
    for k, v in OFF_FORWARD.items():
        assert _close(float(metrics[k]), v), (k, float(metrics[k]), v)
    run = train(tiny_preset(digits_dir, "unidisc", **{**_training(8), **OFF}), tmp_path / "off", progress=False)
    rows = _rows(run)
    assert [r["step"] for r in rows] == list(range(1, 9))
    for r, ref in zip(rows, OFF_CURVE, strict=True):
        got = (r["loss"], r["text_loss"], r["image_loss"])
        assert all(_close(a, b) for a, b in zip(got, ref, strict=True)), (r["step"], got, ref)
    assert all(_close(rows[-1][k], v) for k, v in OFF_VAL.items()), rows[-1]


def _spy_forward(model: UnifiedModel, monkeypatch) -> dict:
    """Record the text objective's state and what the writer got and returned in joint masking."""
    seen: dict = {}
    corrupt, joint_inputs = model.text.corrupt, model.writer.joint_inputs

    def spy_corrupt(batch, generator=None):
        out = corrupt(batch, generator)
        seen["text"] = out[1]
        return out

    def spy_inputs(ctx, images, mask, generator=None):
        out = joint_inputs(ctx, images, mask, generator)
        seen["mask"], seen["codes"] = mask, out[1]
        return out

    monkeypatch.setattr(model.text, "corrupt", spy_corrupt)
    monkeypatch.setattr(model.writer, "joint_inputs", spy_inputs)
    return seen


def test_joint_masking_shares_one_t_per_example_across_text_and_codes(digits_dir, monkeypatch):
    """One t per example (uniform here): its words and its image's codes are masked at that rate; the t2i prompt
    and the codes of read images are masked too."""
    model = _model(digits_dir, "unidisc", **{"text.mask_alpha": 1.0, **ALL_JOINT})
    batch = make_batch(model, _images(200), EXAMPLES * 50)
    seen = _spy_forward(model, monkeypatch)
    _, metrics = model(batch, torch.Generator().manual_seed(0))
    text, codes, t = seen["text"], seen["codes"], seen["text"].t
    assert torch.equal(seen["mask"].t, t[batch.image_rows()])  # the writer masks with the examples' own draw
    assert codes.masked.shape[0] == 200  # every image, read or generated
    rows = text.corruptible.sum(1) >= 16  # understanding examples: answer (and question) give shares to compare
    text_share = text.masked[rows].sum(1) / text.corruptible[rows].sum(1)
    code_share = codes.masked[rows].float().mean(1)  # one image per example, in row order
    t = t[rows]
    assert float((text_share - t).abs().mean()) < 0.1 and float((code_share - t).abs().mean()) < 0.1
    assert float(torch.corrcoef(torch.stack([text_share, code_share]))[0, 1]) > 0.7
    t2i = batch.image_generate[batch.image_rows()]  # rows whose image is generated
    prompt = _words(model, batch) & ~_answer(batch)
    assert text.masked[t2i & prompt.any(1)][prompt[t2i & prompt.any(1)]].any()  # the t2i prompt gets masked
    assert codes.masked[~batch.image_generate].any()  # so do the codes of images that are read
    assert metrics["image_loss"] > 0 and metrics["text_loss"] > 0


def test_joint_fraction_masks_the_rest_conditionally(digits_dir, monkeypatch):
    """``text.joint_fraction = 0.5``: about half the examples are masked jointly as above; the others only on what
    they produce (the answer, a generated image's codes, at their own t) while prompt, question and read image
    stay clean and carry no loss. At 1 (the default) no example is conditional and no extra draw is made."""
    model = _model(digits_dir, "unidisc", **{"text.mask_alpha": 1.0, "text.joint_fraction": 0.5})
    batch = make_batch(model, _images(200), EXAMPLES * 50)
    seen = _spy_forward(model, monkeypatch)
    _, metrics = model(batch, torch.Generator().manual_seed(0))
    text, codes, mask = seen["text"], seen["codes"], seen["mask"]
    cond = text.conditional
    assert 0.35 < float(cond.float().mean()) < 0.65
    condition = _words(model, batch) & ~_answer(batch)  # t2i prompts and VQA questions
    assert not text.masked[cond][condition[cond]].any()  # conditional examples: the condition stays clean
    assert text.masked[~cond][condition[~cond]].any()  # joint examples: it is masked
    assert not (text.masked & ~text.corruptible).any() and torch.equal(text.corruptible[cond], _answer(batch)[cond])
    per_image = cond[batch.image_rows()]
    read = ~batch.image_generate
    assert not codes.masked[per_image & read].any() and (mask.t[per_image & read] == 0).all()
    assert codes.masked[per_image & ~read].any() and codes.masked[~per_image & read].any()
    t = text.t[batch.image_rows()]
    assert torch.equal(mask.t[~(per_image & read)], t[~(per_image & read)])  # every other image: its example's t
    assert metrics["image_loss"] > 0 and metrics["text_loss"] > 0

    model = _model(digits_dir, "unidisc", **ALL_JOINT)
    assert model.cfg.text.joint_fraction == 1.0
    g = torch.Generator().manual_seed(0)
    _, state = model.text.corrupt(batch, g)
    assert state.conditional is None and model.text.joint_mask(state).conditional is None
    model.text.corrupt(batch, g)  # the same draws in the same order as before the knob existed
    reference = torch.Generator().manual_seed(0)
    for _ in range(2):
        torch.rand(len(batch.tokens), 1, generator=reference)
        torch.rand(batch.tokens.shape, generator=reference)
    assert torch.equal(g.get_state(), reference.get_state())


def test_switch_off_masks_only_answers_and_generated_codes(digits_dir):
    model = _model(digits_dir, "unidisc", **OFF)
    batch = make_batch(model, _images(40), EXAMPLES * 10)
    g = torch.Generator().manual_seed(0)
    _, state = model.text.corrupt(batch, g)
    assert state.masked.any() and not (state.masked & ~_answer(batch)).any()  # never the prompt or the question
    assert model.text.joint_mask(state) is None
    _, codes = model.writer.train_inputs(model.ctx, batch.images, batch.image_generate, g)
    assert codes.masked.shape[0] == int(batch.image_generate.sum())  # read images stay clean


def test_structure_is_never_masked(digits_dir, monkeypatch):
    """At t = 1 joint masking masks every word (prompt, question, answer) and every code of every image, and
    still never <bos>, <sep>, <boi>, <eoi>, image placeholders, the <eos> closing a t2i example, or padding."""
    model = _model(digits_dir, "unidisc", **ALL_JOINT)
    monkeypatch.setattr(model.text, "mask_ratio", lambda n, generator=None: torch.ones(n, 1))
    batch = make_batch(model, _images(4), EXAMPLES)
    tokens, state = model.text.corrupt(batch, torch.Generator().manual_seed(0))
    tok = model.tokenizer
    assert (~batch.valid).any()  # the batch has padding
    fixed = torch.tensor([tok.pad_id, tok.bos_id, tok.boi_id, tok.eoi_id, tok.img_id, tok.sep_id])
    structure = torch.isin(batch.tokens, fixed) | ~batch.valid | (batch.modality == IMAGE)
    assert not state.masked[structure].any() and torch.equal(tokens[structure], batch.tokens[structure])
    for row in (0, 1):  # t2i rows end with <eos>, given clean at sampling
        last = int(batch.valid[row].nonzero().max())
        assert batch.tokens[row, last] == tok.eos_id and not state.masked[row, last]
    prompt, question = len(tok.encode(EXAMPLES[0].text)), len(tok.encode(EXAMPLES[3].text))
    answer = model.layout.answer_len
    assert state.masked.sum(1).tolist() == [prompt, 0, answer, question + answer]
    assert torch.equal(state.masked, _words(model, batch) | _answer(batch))  # the answer's <eos> padding too
    mask = model.text.joint_mask(state).select(batch.image_rows())
    _, codes = model.writer.joint_inputs(model.ctx, batch.images, mask, torch.Generator().manual_seed(0))
    assert codes.masked.all() and codes.masked.shape[0] == 4  # read images too


def test_elbo_weight_is_the_hand_computed_weighted_mean(digits_dir, monkeypatch):
    """``text.elbo_weight``: sum over masked positions of CE / t of its example, divided by the corruptible
    positions, for text and codes alike; without it the plain mean over masked positions; t >= T_MIN."""
    model = _model(digits_dir, "unidisc", **{"text.elbo_weight": "true"})
    ctx, batch = model.ctx, make_batch(model, _images(4), EXAMPLES)
    can = model.text.corruptible(batch)
    masked = can & (torch.rand(can.shape, generator=torch.Generator().manual_seed(3)) < 0.6)
    t = torch.tensor([0.5, 0.25, 0.8, 0.1])
    state = MaskedTextState(masked, t, can)
    hidden = torch.randn(*batch.tokens.shape, model.cfg.model.dim, generator=torch.Generator().manual_seed(4))
    logp = ctx.text_logits(hidden).float().log_softmax(-1)
    terms = [
        (-logp[b, i, batch.tokens[b, i]], t[b])
        for b in range(can.shape[0])
        for i in range(can.shape[1])
        if masked[b, i]
    ]
    weighted = sum(ce / tb for ce, tb in terms) / int(can.sum())
    torch.testing.assert_close(model.text.loss(ctx, hidden, batch, state), weighted)
    model.text.settings.elbo_weight = False
    plain = sum(ce for ce, _ in terms) / len(terms)
    torch.testing.assert_close(model.text.loss(ctx, hidden, batch, state), plain)
    assert abs(float(weighted) - float(plain)) > 0.1  # the weight changes the loss here

    img = batch.image_id >= 0
    _, codes = model.writer.joint_inputs(ctx, batch.images, JointMask(t, True), torch.Generator().manual_seed(5))
    n = codes.masked.shape[1]
    logq = model.writer.code_logits(ctx, hidden[img]).float().log_softmax(-1).view(4, n, -1)
    expected = sum(-logq[g, j, codes.codes[g, j]] / t[g] for g in range(4) for j in range(n) if codes.masked[g, j]) / (
        4 * n
    )
    loss, _ = model.writer.loss(ctx, hidden, img, codes)
    torch.testing.assert_close(loss, expected)

    monkeypatch.setattr(model.text, "mask_ratio", lambda k, generator=None: torch.zeros(k, 1))
    _, state = model.text.corrupt(batch, torch.Generator().manual_seed(0))
    assert (state.t == T_MIN).all()  # clamped: the weight is at most 1 / T_MIN


def test_elbo_weight_needs_joint_and_joint_needs_a_masking_writer_and_shared_reader(digits_dir):
    from unimm.config import ConfigError

    with pytest.raises(ConfigError, match=r"text.elbo_weight = true needs text.joint = true"):
        tiny_preset(digits_dir, "unidisc", **{**OFF, "text.elbo_weight": "true"})
    with pytest.raises(ConfigError, match=r"text.joint = true .*writer kind 'ar-codes'"):
        tiny_preset(digits_dir, "unidisc", **{"writer.kind": "ar-codes", "sample.sampler": "ar"})
    with pytest.raises(ConfigError, match=r"text.joint = true .*reader kind 'vit'"):
        tiny_preset(digits_dir, "unidisc", **{"reader.kind": "vit"})


@pytest.fixture(scope="module")
def joint_runs(digits_dir, tmp_path_factory):
    """Two tiny joint-masked runs of the preset with the same seed."""
    root = tmp_path_factory.mktemp("joint")
    cfg = tiny_preset(digits_dir, "unidisc", **{**_training(16), "train.val_every": 0})
    assert cfg.text.joint and not cfg.text.elbo_weight
    return [train(cfg, root / name, progress=False) for name in ("a", "b")]


def test_joint_training_is_deterministic_and_learns(joint_runs):
    a, b = (_rows(r) for r in joint_runs)
    keys = ("step", "loss", "text_loss", "image_loss", "grad_norm")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    loss = [r["loss"] for r in a]
    assert len(loss) == 16 and all(r["image_loss"] > 0 for r in a)  # read images carry the image loss too
    assert sum(loss[-4:]) / 4 < sum(loss[:4]) / 4 - 1.0
    wa, wb = (UnifiedModel.from_pretrained(r).state_dict() for r in joint_runs)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_joint_trained_model_captions_and_generates(joint_runs):
    model = UnifiedModel.from_pretrained(joint_runs[0])
    assert model.cfg.text.joint
    images, n = _images(3, seed=7), model.layout.answer_len
    for question in (None, "what digit is this?"):
        out = model.caption(images, question)
        assert len(out) == 3 and all(isinstance(c, str) and len(model.tokenizer.encode(c)) < n for c in out)
    seen, decode = [], model.writer.decode
    model.writer.decode = lambda codes: seen.append(codes) or decode(codes)
    gen = model.generate(["a handwritten seven", "the digit 1"], generator=torch.Generator().manual_seed(0))
    assert gen.shape == (2, 1, 8, 8) and gen.min() >= -1 and gen.max() <= 1
    (codes,) = seen
    assert codes.shape == (2, math.prod(model.writer.grid))
    assert codes.min() >= 0 and codes.max() < model.writer.num_codes  # no [MASK] left
