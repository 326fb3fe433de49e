"""Cooldown branches (``train/fork.py``): a branch forked from a longer WSD run's stable phase is, bit for bit,
the WSD run of its own length; its ledger counts what it inherited; the wrong fork is one clear error."""

import json

import pytest
import torch

from conftest import tiny_overrides
from unimm.checkpoint import load_state, load_weights
from unimm.config import load_config
from unimm.optim import warmup_stable_decay
from unimm.train import train
from unimm.train.fork import fork

VOLATILE = {"tokens_per_s"}
WSD = {
    "train.schedule": "'wsd'",
    "train.cooldown": 0.25,
    "train.ema": 0.9,
    "train.flops_every": 2,
    "train.save_every": 4,
}
BUDGET, STABLE = 8, 12  # the budget forks at step 6; the stable run decays from step 9


def _cfg(digits_dir, steps, **extra):
    return load_config(None, tiny_overrides(digits_dir, **{**WSD, "train.steps": steps, **extra}))


def _rows(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


@pytest.fixture(scope="module")
def runs(digits_dir, tmp_path_factory):
    """A dedicated WSD run of BUDGET steps and a stable run of STABLE steps that keeps BUDGET's fork step."""
    root = tmp_path_factory.mktemp("wsd")
    direct = train(_cfg(digits_dir, BUDGET), root / "direct", progress=False)
    stable = train(_cfg(digits_dir, STABLE, **{"train.branches": f"[{BUDGET}]"}), root / "stable", progress=False)
    return direct, stable


def test_the_stable_run_keeps_the_fork_checkpoint(runs):
    _, stable = runs
    kept = sorted(p.name for p in (stable / "checkpoints").glob("step_*"))
    assert kept == ["step_0000006", "step_0000008", "step_0000012"]  # 6 beside the rotation's last two


def test_a_branch_is_the_wsd_run_of_its_length_bit_for_bit(runs, tmp_path, monkeypatch):
    direct, stable = runs
    used = []
    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    branch = fork(stable, tmp_path / "branch", BUDGET, progress=False)
    cfg = load_config(branch / "config.toml")
    assert cfg.train.steps == BUDGET and cfg.train.branches == []
    schedule = warmup_stable_decay(cfg.train.warmup, BUDGET, 0.25, cfg.train.cooldown_shape, cfg.train.min_lr_ratio)
    assert used == [cfg.train.lr * schedule(i) for i in (6, 7)]  # the decay of an 8-step run, from the fork
    assert used[0] == cfg.train.lr  # the fork step still has the stable LR
    a, b = _rows(direct), _rows(branch)
    assert [r["step"] for r in b] == list(range(1, BUDGET + 1))
    assert a == b  # after the fork: loss, gradient norm, LR, FLOPs; before it: the stable run's own rows
    assert _rows(stable)[6]["lr"] != b[6]["lr"]  # the stable run does not decay there: the test can tell
    for name in ("checkpoints/step_0000008/model.safetensors", "model.safetensors"):  # weights, EMA
        wa, wb = load_weights(direct / name), load_weights(branch / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_the_branch_ledger_counts_what_it_inherited(runs, tmp_path):
    direct, stable = runs
    branch = fork(stable, tmp_path / "branch", BUDGET, progress=False)
    ledger = json.loads((branch / "ledger.json").read_text())
    at_fork = load_state(stable / "checkpoints" / "step_0000006" / "train_state.pt")["ledger"]
    assert at_fork["training_steps"] == {"steps": 6, "flops": _rows(direct)[5]["train_flops"]}
    f = ledger["fork"]
    assert f["run"] == str(stable.resolve()) and f["step"] == 6
    assert f["inherited"] == at_fork["total"] > 0 and f["own"] == ledger["total"] - f["inherited"] > 0
    assert ledger["total"] == json.loads((direct / "ledger.json").read_text())["total"]  # the same compute embodied
    assert "fork" not in json.loads((direct / "ledger.json").read_text())
    record = json.loads((branch / "fork.json").read_text())
    assert record == {"run": f["run"], "step": 6, "stable_steps": STABLE, "inherited": f["inherited"]}
    sessions = json.loads((branch / "trained_on.json").read_text())
    assert [s["from_step"] for s in sessions] == [0, 6]  # the stable run's session, then the branch's


def test_wrong_forks_are_one_clear_error(runs, digits_dir, tmp_path):
    direct, stable = runs
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 3, the fork step of budget 4 .*branches"):
        fork(stable, tmp_path / "a", 4, progress=False)
    with pytest.raises(ValueError, match=r"these differ from .*: train.lr \(0.002 != 0.001\)"):
        fork(stable, tmp_path / "b", BUDGET, ["train.lr=0.002"], progress=False)
    with pytest.raises(ValueError, match=r"budget 16 forks at step 12, after the stable phase .* step 9 of 12"):
        fork(stable, tmp_path / "c", 16, progress=False)
    cosine = train(
        load_config(None, tiny_overrides(digits_dir, **{"train.steps": 2})), tmp_path / "cosine", progress=False
    )
    with pytest.raises(ValueError, match="train.schedule = 'cosine': only a 'wsd' run"):
        fork(cosine, tmp_path / "d", 2, progress=False)
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        fork(tmp_path / "nothing", tmp_path / "e", 2, progress=False)
    assert not any((tmp_path / n).exists() for n in "abcde")  # refused before anything was written
