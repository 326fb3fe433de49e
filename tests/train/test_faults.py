"""Fault tolerance: non-finite steps are skipped, a SIGKILLed run resumes losing nothing, unsafe or damaged
checkpoint files are refused with a clear error."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

import unimm.train.loop as loop
from conftest import tiny_overrides, train_until
from unimm.checkpoint import load_state, load_weights
from unimm.config import load_config
from unimm.models import UnifiedModel
from unimm.train import train
from unimm.train.checkpoints import SafeReader


def _cfg(digits_dir, **extra):
    return load_config(None, tiny_overrides(digits_dir, **extra))


def _poison_forward(monkeypatch, bad_calls) -> None:
    """Make ``UnifiedModel.forward`` return a NaN loss on the given (0-based) calls."""
    real, calls = UnifiedModel.forward, []

    def forward(self, batch, generator=None):
        loss, metrics = real(self, batch, generator)
        calls.append(1)
        if len(calls) - 1 in bad_calls:
            loss = loss * float("nan")
            metrics = {**metrics, "loss": loss.detach()}
        return loss, metrics

    monkeypatch.setattr(UnifiedModel, "forward", forward)


def _record_checkpoints(monkeypatch) -> dict[int, dict]:
    """Keep a copy of the weights and EMA written at every checkpoint, by step."""
    real, saved = loop.save_checkpoint, {}

    def save(out, model, ema, opt, sched, step, extra=None, **kwargs):
        saved[step] = {
            "model": {k: v.clone() for k, v in model.state_dict().items()},
            "ema": {k: v.clone() for k, v in ema.shadow.items()},
        }
        return real(out, model, ema, opt, sched, step, extra, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", save)
    return saved


def test_a_nan_loss_skips_that_step_and_training_goes_on(digits_dir, tmp_path, monkeypatch, capsys):
    _poison_forward(monkeypatch, {2})  # step 3
    saved = _record_checkpoints(monkeypatch)
    out = train(
        _cfg(digits_dir, **{"train.steps": 5, "train.save_every": 1, "train.ema": 0.9}), tmp_path / "r", progress=False
    )
    said = capsys.readouterr().err
    assert "step 3: non-finite loss in micro-batch 2 (" in said and "skipped the update" in said
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[2]["skipped"] == "non-finite loss" and rows[2]["bad_batches"][0].startswith("micro-batch 2 (")
    assert "texts '" in rows[2]["bad_batches"][0]
    for part in ("model", "ema"):  # no update at step 3: the state stays that of step 2
        assert all(torch.equal(saved[3][part][k], saved[2][part][k]) for k in saved[2][part])
        assert not all(torch.equal(saved[4][part][k], saved[3][part][k]) for k in saved[3][part])
    final = load_weights(out / "checkpoints" / "step_0000005" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in final.values())
    state = load_state(out / "checkpoints" / "step_0000005" / "train_state.pt")
    assert int(state["optimizer"]["state"][0]["step"]) == 4  # 5 steps, 4 updates


def test_consecutive_bad_steps_stop_with_a_clear_error(digits_dir, tmp_path, monkeypatch):
    _poison_forward(monkeypatch, set(range(1, 100)))  # every step from step 2 on
    cfg = _cfg(digits_dir, **{"train.steps": 6, "train.save_every": 1, "train.max_bad_steps": 2})
    with pytest.raises(FloatingPointError, match="stopping at steps 2-3.*last checkpoint is intact"):
        train(cfg, tmp_path / "r", progress=False)
    ck = tmp_path / "r" / "checkpoints"
    assert (ck / "latest").read_text() == "step_0000002"  # written before the second bad step
    assert all(torch.isfinite(v).all() for v in load_weights(ck / "step_0000002" / "model.safetensors").values())


CHILD = """
import sys, time
import torch
torch.set_num_threads(1)
import unimm.train.checkpoints as checkpoints
from unimm.config import load_config
from unimm.train import train
from unimm.train.stream import ExampleStream

out, marker, where, resume, overrides = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5:]
kind, at = where.split(":")

def stall():
    open(marker, "w").close()
    time.sleep(600)

if kind == "save":  # inside the checkpoint of step `at`: weights written, train_state.pt not yet
    real_save = checkpoints.save_state
    def save_state(state, path):
        if state["step"] == int(at):
            stall()
        real_save(state, path)
    checkpoints.save_state = save_state
else:  # in the middle of step `at`, before its update
    real_batch = ExampleStream.batch
    def batch(self, k):
        if k == int(at) - 1:
            stall()
        return real_batch(self, k)
    ExampleStream.batch = batch
train(load_config(None, overrides), out, resume=resume, progress=False)
"""


def _kill_when_stalled(out: Path, where: str, resume: bool, overrides: list[str]) -> None:
    """Train in a subprocess until it stalls at ``where`` ("save:STEP" or "step:STEP"), then SIGKILL it."""
    marker = out.parent / "stalled"
    args = [sys.executable, "-c", CHILD, str(out), str(marker), where, "1" if resume else "0", *overrides]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the child never reached the stall"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    marker.unlink()


def test_a_sigkilled_run_resumes_from_its_last_complete_checkpoint(digits_dir, tmp_path):
    overrides = tiny_overrides(digits_dir, **{"train.steps": 6, "train.save_every": 2, "train.ema": 0.9})
    train(load_config(None, overrides), tmp_path / "full", progress=False)
    run = tmp_path / "run"
    ck = run / "checkpoints"
    _kill_when_stalled(run, "save:4", False, overrides)  # killed while writing checkpoint 4
    assert (ck / "latest").read_text() == "step_0000002"
    assert (ck / ".step_0000004.tmp" / "model.safetensors").is_file() and not (ck / "step_0000004").exists()
    (run / ".model.safetensors.x1.tmp").write_bytes(b"half a file")  # as a kill inside atomic_write leaves
    _kill_when_stalled(run, "step:5", True, overrides)  # resumed, then killed in the middle of step 5
    assert not (ck / ".step_0000004.tmp").exists() and not (run / ".model.safetensors.x1.tmp").exists()
    assert (ck / "latest").read_text() == "step_0000004"
    train(load_config(None, overrides), run, resume=True, progress=False)
    for name in ("checkpoints/step_0000006/model.safetensors", "model.safetensors"):  # weights, EMA weights
        a, b = load_weights(tmp_path / "full" / name), load_weights(run / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


class _Payload:
    """Unpickling this creates a file: the harmless stand-in for code an attacker would run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_resume_refuses_a_pickled_payload_and_names_a_truncated_file(digits_dir, tmp_path):
    out = train(_cfg(digits_dir, **{"train.steps": 2}), tmp_path / "r", progress=False)
    ckpt, marker = out / "checkpoints" / "step_0000002", tmp_path / "pwned"
    shutil.copy(ckpt / "train_state.pt", tmp_path / "good.pt")
    torch.save({"step": 2, "optimizer": _Payload(marker)}, ckpt / "train_state.pt")
    with pytest.raises(ValueError, match="refusing to load .*train_state.pt.*could run code"):
        train(_cfg(digits_dir, **{"train.steps": 2}), out, resume=True, progress=False)
    assert not marker.exists()
    shutil.copy(tmp_path / "good.pt", ckpt / "train_state.pt")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{weights}.*corrupt or truncated"):
        train(_cfg(digits_dir, **{"train.steps": 4}), out, resume=True, progress=False)


@pytest.mark.parametrize("damage", ["truncated weights", "missing train state"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(digits_dir, tmp_path, capsys, damage):
    """The previous checkpoint is kept for this: --resume warns, naming both, sets the damaged one aside (never
    deleted) and ends on the weights of an uninterrupted run."""
    extra = {"train.steps": 6, "train.save_every": 2, "train.ema": 0.9}
    full = train(_cfg(digits_dir, **extra), tmp_path / "full", progress=False)
    run = tmp_path / "run"
    train_until(_cfg(digits_dir, **extra), run, stop_after=4)
    ck = run / "checkpoints"
    if damage == "truncated weights":
        weights = ck / "step_0000004" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        (ck / "step_0000004" / "train_state.pt").unlink()
    capsys.readouterr()
    train(_cfg(digits_dir, **extra), run, resume=True, progress=False)
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and f"{ck / 'step_0000004'} does not load" in warning[0]
    assert f"resuming from {ck / 'step_0000002'} instead (kept as {ck / 'corrupt_step_0000004'})" in warning[0]
    assert (ck / "corrupt_step_0000004").is_dir() and (ck / "latest").read_text() == "step_0000006"
    for name in ("checkpoints/step_0000006/model.safetensors", "model.safetensors"):  # weights, EMA weights
        a, b = load_weights(full / name), load_weights(run / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_sharded_checkpoint_index_is_read_without_running_code(tmp_path):
    dcp.save({"w": torch.arange(4.0)}, checkpoint_id=tmp_path / "ok")
    loaded = {"w": torch.zeros(4)}
    dcp.load(loaded, storage_reader=SafeReader(tmp_path / "ok"))
    assert torch.equal(loaded["w"], torch.arange(4.0))
    marker = tmp_path / "pwned"
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match="refusing to load (io|builtins).open"):
        SafeReader(tmp_path / "evil").read_metadata()
    assert not marker.exists()
    dcp.save({"w": torch.ones(2), "note": "a pickled value"}, checkpoint_id=tmp_path / "bytes")
    with pytest.raises(ValueError, match="entry 'note' is not a tensor"):
        SafeReader(tmp_path / "bytes").read_metadata()
