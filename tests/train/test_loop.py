"""The training loop: exact resume, run-dir contents, atomic checkpoints, clear errors."""

import json
import re
import shutil
import sys

import pytest
import torch

from conftest import tiny_overrides, tiny_preset, train_until
from unimm.checkpoint import load_weights
from unimm.config import load_config
from unimm.data import load_split
from unimm.flops import count_flops
from unimm.models import UnifiedModel
from unimm.optim import warmup_cosine
from unimm.train import train
from unimm.train.loop import build_tokenizer, make_batch, resolve_data
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
    capsys.readouterr()
    train(_cfg(digits_dir, 4, **{"model.depth": 3, "train.threads": 1}), out, resume=True, progress=False)
    said = capsys.readouterr().out
    assert "ignoring model.depth (3 != 2)\n" in said  # a launch setting (threads) is taken, not ignored
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_resume_note_names_only_what_the_user_changed(digits_dir, tmp_path, capsys):
    """A run on a trained VQ tokenizer saves the tokenizer's geometry (codec.codebook, ...) in its config; the
    same command with --resume changed nothing, so the note must not list those as ignored."""
    from unimm.config import TokenizerConfig
    from unimm.tokenizers.train import train_tokenizer

    sets = [f"data.path={str(digits_dir)!r}", "tokenizer.codebook_size=12", "tokenizer.code_dim=4",
            "tokenizer.hidden=8", "tokenizer.downsample=2", "train.steps=2"]  # fmt: skip
    train_tokenizer(load_config(None, sets, schema=TokenizerConfig), tmp_path / "tok", progress=False)
    extra = {"codec.tokenizer": f'"{tmp_path / "tok"}"', "train.steps": 2}
    out = train(tiny_preset(digits_dir, "chameleon", **extra), tmp_path / "run", progress=False)
    assert "codebook = 12" in (out / "config.toml").read_text()
    capsys.readouterr()
    train(tiny_preset(digits_dir, "chameleon", **extra), out, resume=True, progress=False)
    assert "ignoring" not in capsys.readouterr().out
    train(tiny_preset(digits_dir, "chameleon", **extra, **{"sample.cfg": 2.0}), out, resume=True, progress=False)
    assert "ignoring sample.cfg (2.0 != 3.0)\n" in capsys.readouterr().out


def test_a_finished_run_is_extended_by_a_new_train_steps(digits_dir, tmp_path, capsys, monkeypatch):
    """--resume --set train.steps=N continues a finished run to N steps, the LR schedule recomputed over N (the
    optimizer's LR included from the first new step); a lower N than done is an error."""
    out = train(_cfg(digits_dir, 4), tmp_path / "r", progress=False)
    cfg = _cfg(digits_dir, 6)
    used = []
    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    capsys.readouterr()
    train(cfg, out, resume=True, progress=False)
    assert "train.steps from 4 to 6" in capsys.readouterr().out
    schedule = warmup_cosine(cfg.train.warmup, 6, cfg.train.min_lr_ratio)
    assert used == [cfg.train.lr * schedule(4), cfg.train.lr * schedule(5)]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert rows[-1]["lr"] == cfg.train.lr * schedule(6)
    assert (out / "checkpoints" / "latest").read_text() == "step_0000006"
    assert load_config(out / "config.toml").train.steps == 6  # a later --resume keeps the new length
    with pytest.raises(ValueError, match=r"train.steps = 5 is below step 6"):
        train(_cfg(digits_dir, 5), out, resume=True, progress=False)


def test_interrupt_says_how_to_resume(digits_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    monkeypatch.setattr(sys, "argv", ["unimm", "train", "configs/quick.toml", "--out", str(out), "--set", "a.b=1"])
    train_until(_cfg(digits_dir, 4), out, stop_after=2)
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"the last checkpoint is step 2 ({out / 'checkpoints' / 'step_0000002'})" in said
    assert said.endswith(f"continue with: unimm train configs/quick.toml --out {out} --set a.b=1 --resume")


def test_tensorboard_logs_each_step_once_after_a_resume(digits_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = train(_cfg(digits_dir, 4, **{"train.tensorboard": "true"}), tmp_path / "r", progress=False)
    # as if killed after logging steps 3 and 4 but before checkpoint 4 was complete
    shutil.rmtree(out / "checkpoints" / "step_0000004")
    (out / "checkpoints" / "latest").write_text("step_0000002")
    train(_cfg(digits_dir, 4, **{"train.tensorboard": "true"}), out, resume=True, progress=False)
    board = EventAccumulator(str(out / "tb"))
    board.Reload()
    assert [e.step for e in board.Scalars("train/loss")] == [1, 2, 3, 4]


@pytest.mark.parametrize("preset", ["quick", "chameleon", "ar-moe"])  # pixels, VQ codes, routed experts
def test_val_loss_is_logged_and_leaves_training_unchanged(digits_dir, tmp_path, preset):
    """val_loss on the val split every train.val_every steps and at the last (a row of its own when the step logs
    no training row) and in tensorboard; training rows and weights equal those of a run without it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    extra = {"train.steps": 5, "train.log_every": 2, "train.save_every": 5, "train.ema": 0.9}
    extra["train.tensorboard"] = "true"
    on = train(tiny_preset(digits_dir, preset, **extra, **{"train.val_every": 3}), tmp_path / "on", progress=False)
    off = train(tiny_preset(digits_dir, preset, **extra, **{"train.val_every": 0}), tmp_path / "off", progress=False)
    rows_on = [json.loads(line) for line in (on / "metrics.jsonl").read_text().splitlines()]
    rows_off = [json.loads(line) for line in (off / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_on] == [2, 3, 4, 5] and [r["step"] for r in rows_off] == [2, 4, 5]
    assert [r["step"] for r in rows_on if "val_loss" in r] == [3, 5]
    assert all(0 < r["val_loss"] < 20 and {"val_text_loss", "val_image_loss"} <= r.keys() for r in rows_on[1::2])
    volatile = {"tokens_per_s", "val_loss", "val_text_loss", "val_image_loss"}
    by_step = {r["step"]: r for r in rows_on}
    for r in rows_off:
        assert {k: v for k, v in by_step[r["step"]].items() if k not in volatile} == {
            k: v for k, v in r.items() if k not in volatile
        }
    for name in ("model.safetensors", "checkpoints/step_0000005/model.safetensors"):
        a, b = load_weights(on / name), load_weights(off / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    board = EventAccumulator(str(on / "tb"))
    board.Reload()
    assert [e.step for e in board.Scalars("val/loss")] == [3, 5]


def test_val_loss_repeats_and_a_dataset_without_val_split_trains_without_it(digits_dir, tmp_path, capsys):
    """The same held-out batches and noise every time: a repeated run logs the same values."""
    extra = {"train.val_every": 2}
    a = train(_cfg(digits_dir, 4, **extra), tmp_path / "a", progress=False)
    b = train(_cfg(digits_dir, 4, **extra), tmp_path / "b", progress=False)
    val = [
        [json.loads(line).get("val_loss") for line in (r / "metrics.jsonl").read_text().splitlines()] for r in (a, b)
    ]
    assert val[0] == val[1] and val[0][1] is not None and val[0][1] != val[0][3]
    data = tmp_path / "no-val"
    shutil.copytree(digits_dir, data)
    for f in data.glob("val*"):
        f.unlink()
    capsys.readouterr()
    out = train(load_config(None, tiny_overrides(data, **extra)), tmp_path / "c", progress=False)
    assert "note: no val_loss" in capsys.readouterr().err
    assert not any("val_loss" in line for line in (out / "metrics.jsonl").read_text().splitlines())


def test_preparation_is_announced_with_its_cost(digits_dir, tmp_path, capsys):
    vae = '{kind = "vae", patch_size = 2, downsample = 2, steps = 3, hidden = 8}'
    train(_cfg(digits_dir, 1, codec=vae), tmp_path / "r", progress=False)
    said = capsys.readouterr().out
    assert (
        "fitting the VAE codec first: 3 steps (codec.steps); set codec.steps=N to shorten it for a smoke test" in said
    )
    steps = {"writer.train": '"frozen"', "writer.pretrain_steps": 7, "reader.pretrain_steps": 5}
    cfg = tiny_preset(digits_dir, "connector", **steps)
    data, templates = resolve_data(cfg)
    model = UnifiedModel(cfg, build_tokenizer(cfg, data, templates))
    assert model.preparation(data.labels) == [
        ("fitting the VAE codec", cfg.codec.steps, "codec.steps"),
        ("pre-training the caption-to-image decoder", 7, "writer.pretrain_steps"),
        ("pre-training the ViT reader as a classifier", 5, "reader.pretrain_steps"),
    ]
    assert model.preparation(None)[-1][2] == "writer.pretrain_steps"  # no labels: the ViT is not pre-trained


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


def test_trains_on_canonical_idx_files(canonical_digits, tmp_path):
    out = train(tiny_preset(canonical_digits, "quick", **{"train.steps": 2}), tmp_path / "r", progress=False)
    model = UnifiedModel.from_pretrained(out)
    assert model.cfg.data.image_size == 8 and model.cfg.data.channels == 1
    encode = model.tokenizer.encode  # BPE learned its merges from generic captions with the classes.txt names
    assert len(encode("an image of a seven")) < len(encode("zq xkwjv uq p bfrtg")) / 2
    test = load_split(canonical_digits, "test")
    assert len(model.caption(test.images[:2], max_new_tokens=3)) == 2


def test_canonical_idx_class_names_from_config_or_a_clear_error(canonical_digits, tmp_path):
    src = tmp_path / "mnist"
    shutil.copytree(canonical_digits, src)
    (src / "classes.txt").unlink()
    with pytest.raises(ValueError, match=r"no class_names.*data.class_names.*classes.txt"):
        resolve_data(tiny_preset(src, "quick"))
    names = json.dumps([f"class {i}" for i in range(10)])
    data, templates = resolve_data(tiny_preset(src, "quick", **{"data.class_names": names}))
    assert data.class_names[3] == "class 3" and templates.kind == "generic"
    assert templates.all_captions(3)[0] == "a class 3"
