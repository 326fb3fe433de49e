"""Data-parallel training on CPU (gloo, 2 processes by torchrun): DDP equals one process on the same global batch,
an FSDP2 checkpoint resumes in one process, bf16 and activation checkpointing."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_model_and_batch, tiny_overrides
from unimm.checkpoint import load_weights
from unimm.config import load_config
from unimm.models import UnifiedModel
from unimm.train import train
from unimm.train.distributed import DistEnv, local_shards, resolve_shards


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int, out: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node nproc -m unimm train`` on CPU, one thread per process."""
    config = out.parent / "empty.toml"
    config.write_text("")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for _attempt in range(2):  # the free port can be taken between probing and binding: one retry on that
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1"]
        cmd += [f"--master-port={_free_port()}", "-m", "unimm", "train", str(config), "--out", str(out)]
        cmd += [a for o in overrides for a in ("--set", o)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        if proc.returncode == 0 or "address already in use" not in proc.stderr.lower():
            break
        shutil.rmtree(out, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("run saved to") == 1  # rank 0 alone reports
    return proc


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_ddp_matches_one_process_on_the_same_global_batch(digits_dir, tmp_path):
    extra = {"train.steps": 4, "train.save_every": 4, "train.flops_every": 2, "train.threads": 1}
    extra["train.val_every"] = 2
    proc = _torchrun(2, tmp_path / "ddp", tiny_overrides(digits_dir, **extra))  # train.parallel left at none
    assert proc.stdout.count("with train.parallel = 'none': training with ddp") == 1  # ddp, said once
    assert 'parallel = "ddp"' in (tmp_path / "ddp" / "config.toml").read_text()
    # DDP's reducer warns (from C++) when a step left no parameter unused: rank 0 alone says it
    assert proc.stderr.count("find_unused_parameters=True was specified") == 1, proc.stderr[-3000:]
    # one process running the same two shards of each global batch of 8 one after the other
    one = load_config(None, tiny_overrides(digits_dir, **extra, **{"train.batch_shards": 2}))
    train(one, tmp_path / "one", progress=False)
    ddp, single = _rows(tmp_path / "ddp"), _rows(tmp_path / "one")
    assert [r["step"] for r in ddp] == [1, 2, 3, 4]  # rank 0 alone logs
    worst = 0.0
    for a, b in zip(ddp, single, strict=True):
        for key in ("loss", "text_loss", "image_loss", "grad_norm"):
            worst = max(worst, abs(a[key] - b[key]) / abs(b[key]))
        assert a["tokens"] == b["tokens"] and a["train_flops"] == b["train_flops"]  # FLOPs summed over ranks
        assert a.get("val_loss") == b.get("val_loss")  # the same val shards, summed in the same order
    print(f"DDP vs one process: max relative loss difference {worst:.1e}")
    assert worst < 1e-5, worst
    wa, wb = load_weights(tmp_path / "ddp" / "model.safetensors"), load_weights(tmp_path / "one" / "model.safetensors")
    print(f"DDP vs one process: max weight difference {max(float((wa[k] - wb[k]).abs().max()) for k in wa):.1e}")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    assert "batch_shards = 2" in (tmp_path / "ddp" / "config.toml").read_text()


def test_fsdp_checkpoint_resumes_in_one_process(digits_dir, tmp_path):
    """Two FSDP2 processes (activation checkpointing on) write sharded checkpoints at steps 2 and 4; a copy cut
    back to step 2 resumes in one plain process and ends on the weights of the uninterrupted run."""
    extra = {"train.steps": 4, "train.save_every": 2, "train.ema": 0.5, "train.threads": 1}
    full = tmp_path / "fsdp"
    fsdp = {"train.parallel": "fsdp", "train.activation_checkpointing": "true"}
    _torchrun(2, full, tiny_overrides(digits_dir, **extra, **fsdp))
    assert (full / "checkpoints" / "step_0000002" / "dcp" / ".metadata").is_file()
    assert [r["step"] for r in _rows(full)] == [1, 2, 3, 4]
    half = tmp_path / "half"
    shutil.copytree(full, half)
    shutil.rmtree(half / "checkpoints" / "step_0000004")
    (half / "checkpoints" / "latest").write_text("step_0000002")
    train(load_config(None, tiny_overrides(digits_dir, **extra)), half, resume=True, progress=False)
    a, b = load_weights(full / "model.safetensors"), load_weights(half / "model.safetensors")  # EMA weights
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"FSDP (2 processes) -> resumed in 1 process: max weight difference {diff:.1e}")
    assert diff < 1e-5
    assert [r["loss"] for r in _rows(full)] == [r["loss"] for r in _rows(half)]
    model = UnifiedModel.from_pretrained(full)  # the gathered full weights load as any run's
    assert all(torch.equal(v, a[k]) for k, v in model.state_dict().items() if k in a)


def test_fsdp_trains_in_bf16_with_activation_checkpointing(digits_dir, tmp_path):
    extra = {"train.steps": 2, "train.threads": 1, "train.parallel": "fsdp", "train.precision": "bf16"}
    _torchrun(2, tmp_path / "r", tiny_overrides(digits_dir, **extra, **{"train.activation_checkpointing": "true"}))
    rows = _rows(tmp_path / "r")
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)


def test_bf16_autocast_trains_in_one_process(digits_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(digits_dir, **{"train.steps": 2, "train.precision": "bf16"}))
    rows = _rows(train(cfg, tmp_path / "r", progress=False))
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)


@pytest.mark.parametrize("layers", ["dense", "moe"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(digits_dir, layers):
    cfg, model, batch = tiny_model_and_batch(digits_dir, **{"layers.kind": layers})
    calls = []
    for block in model.backbone.layers:
        block.register_forward_pre_hook(lambda *_: calls.append(1))  # recompute stops early: no post-hook

    def loss_and_grads(recompute: bool):
        model.backbone.activation_checkpointing = recompute
        model.zero_grad(set_to_none=True)
        calls.clear()
        loss, _ = model(batch, torch.Generator().manual_seed(1))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls)

    loss_a, grads_a, n_a = loss_and_grads(False)
    loss_b, grads_b, n_b = loss_and_grads(True)
    assert (n_a, n_b) == (cfg.model.depth, 2 * cfg.model.depth)  # each block ran again in backward
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=1e-6, atol=1e-6)


def test_shards_cover_each_global_batch_once():
    seen = sorted(k for r in range(2) for k in local_shards(3, 2, 4, DistEnv("ddp", r, 2)))
    assert seen == list(range(24, 32))  # step 3, 2 micro-batches x 4 shards
    assert local_shards(3, 2, 1, DistEnv()) == [6, 7]  # one process, one shard: the micro-batch index
    with pytest.raises(ValueError, match="cannot be split over 3 processes"):
        resolve_shards(8, 2, 3)


def test_parallel_modes_say_how_to_launch(digits_dir, tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    cfg = load_config(None, tiny_overrides(digits_dir, **{"train.parallel": "fsdp"}))
    with pytest.raises(ValueError, match="torchrun --nproc-per-node N -m unimm train"):
        train(cfg, tmp_path / "a", progress=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="train.parallel=ddp"):
        train(load_config(None, tiny_overrides(digits_dir)), tmp_path / "b", progress=False)
