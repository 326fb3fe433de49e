"""The training loop: exact resume, run-dir contents, atomic checkpoints, clear errors."""

import json
import re

import pytest
import torch

from conftest import tiny_overrides, train_until
from unimm.checkpoint import load_weights
from unimm.config import load_config
from unimm.flops import count_flops
from unimm.models import UnifiedModel
from unimm.train import train
from unimm.train.loop import make_batch, resolve_data
from unimm.train.stream import ExampleStream


def _cfg(digits_dir, steps, **extra):
    return load_config(None, tiny_overrides(digits_dir, **{"train.steps": steps, **extra}))


def test_resume_is_exact(digits_dir, tmp_path):
    extra = {"train.save_every": 10, "train.ema": 0.9, "train.grad_accum": 2}
    train(_cfg(digits_dir, 20, **extra), tmp_path / "full", progress=False)
    # an interrupted run: 10 steps of a 20-step schedule, then --resume
    interrupted = _cfg(digits_dir, 20, **extra)
    interrupted_out = tmp_path / "half"
    train_until(interrupted, interrupted_out, stop_after=10)
    train(_cfg(digits_dir, 20, **extra), interrupted_out, resume=True, progress=False)
    a = load_weights(tmp_path / "full" / "checkpoints" / "step_0000020" / "model.safetensors")
    b = load_weights(interrupted_out / "checkpoints" / "step_0000020" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ema_a = load_weights(tmp_path / "full" / "model.safetensors")
    ema_b = load_weights(interrupted_out / "model.safetensors")
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    steps = [json.loads(line)["step"] for line in (interrupted_out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 21))
    full_row, resumed_row = (
        json.loads((d / "metrics.jsonl").read_text().splitlines()[-1]) for d in (tmp_path / "full", interrupted_out)
    )
    assert full_row["train_flops"] == resumed_row["train_flops"] > 0  # the FLOP tally resumes too


def test_run_dir_contents_and_loss_logged(digits_dir, tmp_path):
    out = train(_cfg(digits_dir, 4, **{"train.tensorboard": "true"}), tmp_path / "r", progress=False)
    for name in ("config.toml", "model.safetensors", "tokenizer/tokenizer.json", "metrics.jsonl"):
        assert (out / name).exists(), name
    assert (out / "checkpoints" / "latest").read_text() == "step_0000004"
    assert len(list((out / "checkpoints").glob("step_*"))) == 2  # keeps the last two
    assert any((out / "tb").iterdir())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "text_loss", "image_loss", "tokens_per_s", "lr"} <= rows[-1].keys()
    assert "image_size = 8" in (out / "config.toml").read_text()  # resolved from the data


def test_existing_run_is_not_overwritten_and_missing_resume_is_clear(digits_dir, tmp_path):
    train(_cfg(digits_dir, 2), tmp_path / "r", progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(_cfg(digits_dir, 2), tmp_path / "r", progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_cfg(digits_dir, 2), tmp_path / "empty", resume=True, progress=False)


def test_too_short_max_seq_len_is_refused_before_training_and_names_the_length(digits_dir, tmp_path):
    """A max_seq_len that fits no caption or prompt used to train to the end and leave a model that could neither
    caption nor generate; the error names the length needed, and exactly that length trains, captions and
    generates."""
    with pytest.raises(ValueError, match=r"model.max_seq_len = 20 is too short: .* set model.max_seq_len >= \d+$") as e:
        train(_cfg(digits_dir, 2, **{"model.max_seq_len": 20}), tmp_path / "short", progress=False)
    assert not (tmp_path / "short" / "checkpoints").exists()  # refused before anything trained
    need = int(re.search(r">= (\d+)$", str(e.value)).group(1))
    with pytest.raises(ValueError, match=f">= {need}$"):
        train(_cfg(digits_dir, 2, **{"model.max_seq_len": need - 1}), tmp_path / "one-short", progress=False)
    out = train(_cfg(digits_dir, 2, **{"model.max_seq_len": need}), tmp_path / "fits", progress=False)
    model = UnifiedModel.from_pretrained(out)
    data, templates = resolve_data(model.cfg)
    images = data.images[:2]
    longest_question = max((q for q, _ in templates.all_vqa()), key=lambda q: len(model.tokenizer.encode(q)))
    longest_caption = max(templates.all_texts(), key=lambda t: len(model.tokenizer.encode(t)))
    assert len(model.caption(images)) == len(model.caption(images, question=longest_question)) == 2
    assert model.generate([longest_caption], steps=2).shape == (1, 1, 8, 8)


def test_stream_is_a_pure_function_of_seed_and_index(digits_dir):
    from unimm.train.loop import resolve_data

    cfg = _cfg(digits_dir, 2)
    data, templates = resolve_data(cfg)
    s1 = ExampleStream(data, templates, cfg.data, 8, seed=3)
    s2 = ExampleStream(data, templates, cfg.data, 8, seed=3)
    late = s2.batch(57)  # jump ahead first: no hidden state carried between batches
    for k in (0, 57):
        a, b = s1.batch(k), (late if k == 57 else s2.batch(k))
        assert torch.equal(a[0], b[0]) and a[1] == b[1]
    tasks = {ex.task for k in range(10) for ex in s1.batch(k)[1]}
    assert tasks == {"t2i", "caption", "vqa"}


def test_resume_uses_saved_config_and_says_what_it_ignores(digits_dir, tmp_path, capsys):
    out = tmp_path / "r"
    train_until(_cfg(digits_dir, 4), out, stop_after=2)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')  # a row cut short by the kill
    train(_cfg(digits_dir, 9, **{"model.depth": 3}), out, resume=True, progress=False)
    said = capsys.readouterr().out
    assert "ignoring" in said and "train.steps (9 != 4)" in said and "model.depth (3 != 2)" in said
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_training_flops_are_counted_and_match_an_exact_count(digits_dir, tmp_path):
    """With ``flops_every = 1`` every step is counted by FlopCounterMode (CPU attention included): the
    logged total equals counting the same steps again by hand."""
    cfg = _cfg(digits_dir, 3, **{"train.flops_every": 1, "train.ema": 0})
    out = train(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    model = UnifiedModel.from_pretrained(out)
    data, templates = resolve_data(model.cfg)
    stream = ExampleStream(data, templates, model.cfg.data, model.cfg.train.batch_size, model.cfg.train.seed)
    total = 0
    for k in range(3):
        batch = make_batch(model, *stream.batch(k))
        with count_flops() as counter:
            loss, _ = model(batch, torch.Generator().manual_seed(k))
            loss.backward()
        total += counter.get_total_flops()
    attention = [v for k, v in counter.get_flop_counts()["Global"].items() if "attention" in str(k)]
    assert attention and attention[0] > 0  # the CPU attention kernel is counted
    assert rows[-1]["train_flops"] == total
