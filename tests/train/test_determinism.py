"""Determinism for every preset in ``configs/`` at tiny sizes: 2N steps equal N steps + resume + N steps bit for
bit, two shards in one process equal DDP over two gloo processes with the same shard count, the training loss and
the samples are functions of the seed.

Every random draw must come from a ``torch.Generator`` the caller seeds (in training: one per ``(seed, shard)``).
A part that draws from the global RNG instead fails each test here, because the global RNG differs between the
two compared runs at the moment of the draw: ``train`` seeds it once at the start, so a resumed run starts step
N + 1 from the state after model init, where the uninterrupted run has gone on through the codec fit and N steps
of draws; DDP's second rank never fits the codec and runs shard 1 first, where one process runs it after shard 0;
the sampling and loss tests re-seed the global RNG differently before each of the two calls.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import PRESETS, ROOT, tiny_preset, tiny_preset_overrides, train_until
from unimm.checkpoint import load_weights
from unimm.models import UnifiedModel
from unimm.train import train
from unimm.train.loop import build_tokenizer, make_batch, resolve_data
from unimm.train.stream import ExampleStream

N = 2  # the resume test runs 2N steps, interrupted after N
DDP_STEPS = 2
VOLATILE = {"tokens_per_s"}  # wall-clock: the only metric that may differ between two equal runs


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def _assert_same_rows(a: list[dict], b: list[dict], skip: frozenset = frozenset()) -> None:
    """Every logged value of every step equal, ``skip`` aside."""
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        differ = {k: (ra.get(k), rb.get(k)) for k in ra.keys() | rb.keys() if k not in skip and ra.get(k) != rb.get(k)}
        assert not differ, f"step {ra['step']}: {differ}"


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_weights(a), load_weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    worst = max((float((wa[k] - wb[k]).abs().max()) for k in differ), default=0.0)
    assert not differ, f"{len(differ)}/{len(wa)} tensors differ (max {worst:.1e}), e.g. {differ[:3]}"


# ----------------------------------------------------------------------------- 2N steps = N + resume + N
@pytest.mark.parametrize("preset", PRESETS)
def test_resume_is_bit_exact(digits_dir, tmp_path, monkeypatch, preset):
    extra = {"train.steps": 2 * N, "train.save_every": N}
    full = train(tiny_preset(digits_dir, preset, **extra), tmp_path / "full", progress=False)
    half = tmp_path / "half"
    train_until(tiny_preset(digits_dir, preset, **extra), half, N)
    assert (half / "checkpoints" / "latest").read_text() == f"step_{N:07d}"
    assert [r["step"] for r in _rows(half)] == list(range(1, N + 1))  # it really stopped after N steps
    train(tiny_preset(digits_dir, preset, **extra), half, resume=True, progress=False)
    assert [r["step"] for r in _rows(half)] == list(range(1, 2 * N + 1))
    _assert_same_rows(_rows(half), _rows(full))  # losses, gradient norms, routing, FLOPs: every step equal
    _assert_same_weights(
        full / "checkpoints" / f"step_{2 * N:07d}" / "model.safetensors",
        half / "checkpoints" / f"step_{2 * N:07d}" / "model.safetensors",
    )
    _assert_same_weights(full / "model.safetensors", half / "model.safetensors")  # EMA weights


# ----------------------------------------------------------------------------- 2 shards, 1 process = DDP, 2 processes
DDP_CHILD = """
import datetime, json, sys
import torch
import torch.distributed as dist
from unimm.config import load_config
from unimm.train import train

torch.set_num_threads(1)
jobs = json.loads(open(sys.argv[1]).read())
# one process group for every preset: each train() joins it (a torchrun launch per preset costs ~9 s)
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
for preset, job in jobs.items():
    train(load_config(job["config"], job["overrides"]), job["out"], progress=False)
    if dist.get_rank() == 0:
        print("trained", preset, flush=True)
dist.destroy_process_group()
"""


def _ddp_overrides(digits_dir: Path, preset: str, **extra) -> list[str]:
    base = {"train.steps": DDP_STEPS, "train.save_every": DDP_STEPS, "train.threads": 1, **extra}
    return tiny_preset_overrides(digits_dir, preset, **base)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_runs(digits_dir, tmp_path_factory) -> tuple[Path, str]:
    """Every preset trained by DDP over two gloo processes (``train.batch_shards`` = 2), in one torchrun launch."""
    root = tmp_path_factory.mktemp("ddp")
    jobs = {
        p: {
            "config": str(ROOT / "configs" / f"{p}.toml"),
            "overrides": _ddp_overrides(digits_dir, p, **{"train.parallel": "ddp"}),
            "out": str(root / p),
        }
        for p in PRESETS
    }
    (root / "jobs.json").write_text(json.dumps(jobs))
    (root / "child.py").write_text(DDP_CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for _attempt in range(2):  # the free port can be taken between probing and binding: one retry on that
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1"]
        cmd += [f"--master-port={_free_port()}", str(root / "child.py"), str(root / "jobs.json")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
        if proc.returncode == 0 or "address already in use" not in proc.stderr.lower():
            break
        for p in PRESETS:
            shutil.rmtree(root / p, ignore_errors=True)
    return root, f"torchrun exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}"


@pytest.mark.parametrize("preset", PRESETS)
def test_ddp_equals_the_same_shards_in_one_process(digits_dir, tmp_path, ddp_runs, preset):
    root, launch = ddp_runs
    ddp = root / preset
    assert (ddp / "checkpoints" / "latest").is_file(), launch
    assert "batch_shards = 2" in (ddp / "config.toml").read_text()
    one = train(
        tiny_preset(
            digits_dir,
            preset,
            **{"train.steps": DDP_STEPS, "train.save_every": DDP_STEPS, "train.threads": 1, "train.batch_shards": 2},
        ),
        tmp_path / "one",
        progress=False,
    )
    assert [r["step"] for r in _rows(ddp)] == list(range(1, DDP_STEPS + 1))  # rank 0 alone logs
    _assert_same_rows(_rows(ddp), _rows(one))  # routing too: it is summed over every process's shards
    last = f"checkpoints/step_{DDP_STEPS:07d}/model.safetensors"
    _assert_same_weights(ddp / last, one / last)
    _assert_same_weights(ddp / "model.safetensors", one / "model.safetensors")  # EMA weights


# ----------------------------------------------------------------------------- the same seed, the same result
def _untrained(digits_dir, preset: str) -> tuple[UnifiedModel, object, object]:
    cfg = tiny_preset(digits_dir, preset, **{"sample.head_steps": 4})
    data, templates = resolve_data(cfg)
    torch.manual_seed(0)
    return UnifiedModel(cfg, build_tokenizer(cfg, data, templates)), data, templates


def _twice(fn, seed: int):
    """``fn(generator)`` twice with the same generator seed, the global RNG seeded differently before each."""
    out = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        out.append(fn(torch.Generator().manual_seed(seed)))
    return out


@pytest.mark.parametrize("preset", PRESETS)
def test_training_loss_is_a_function_of_the_generator(digits_dir, preset):
    """What the two training tests check end to end, on one forward/backward of each part: loss and gradients."""
    model, data, templates = _untrained(digits_dir, preset)
    model.train()
    batch = make_batch(model, *ExampleStream(data, templates, model.cfg.data, 8, 0).batch(0))
    assert bool(batch.image_generate.any()) and not bool(batch.image_generate.all())  # both paths run

    def loss_and_grads(gen):
        model.zero_grad(set_to_none=True)
        loss, metrics = model(batch, gen)
        loss.backward()
        return metrics, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    (m1, g1), (m2, g2) = _twice(loss_and_grads, 3)
    assert {k: v.item() for k, v in m1.items()} == {k: v.item() for k, v in m2.items()}
    assert g1.keys() == g2.keys() and all(torch.equal(g1[k], g2[k]) for k in g1)
    if model.cfg.writer.kind != "ar-codes":  # next-token codes draw nothing; every other writer draws noise
        m3, _ = loss_and_grads(torch.Generator().manual_seed(4))
        assert m3["image_loss"] != m1["image_loss"]  # the generator does drive the image loss


@pytest.mark.parametrize("preset", PRESETS)
def test_the_same_seed_gives_the_same_samples(digits_dir, preset):
    model, data, _ = _untrained(digits_dir, preset)
    model.eval()
    prompts = ["a handwritten seven", "the digit 3"]
    a, b = _twice(lambda g: model.generate(prompts, generator=g), seed=5)
    assert a.shape == (2, 1, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, model.generate(prompts, generator=torch.Generator().manual_seed(6)))  # seed matters
    images = data.images[:3]
    a, b = _twice(lambda g: model.caption(images, temperature=1.0, generator=g), seed=5)
    assert a == b
    assert a != model.caption(images, temperature=1.0, generator=torch.Generator().manual_seed(6))
