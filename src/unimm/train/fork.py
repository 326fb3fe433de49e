"""Cooldown branches of a warmup-stable-decay run: many budgets for about the price of one.

A WSD run's LR is the same for every budget until the budget's decay starts, so a run of ``S`` steps equals,
step for step, a longer stable run up to ``fork_step(S, cooldown)``. ``fork`` copies the stable run's
checkpoint at that step (weights, EMA, optimizer, scheduler, FLOP tally; the data stream is a pure function of
the step) into a new run directory whose config is the stable run's with ``train.steps = S``, and resumes it:
the branch then decays over its last ``S * cooldown`` steps exactly as a WSD run of ``S`` steps would have.

The branch records where it came from in ``fork.json`` (the stable run, the fork step, the stable run's
ledger total at the fork: ``train/ledger.py``), and keeps the stable run's ``trained_on.json`` sessions.
"""

import json
import shutil
from pathlib import Path

from unimm.checkpoint import atomic_write_text, load_state
from unimm.config import Config, dump_toml, load_config
from unimm.optim import fork_step
from unimm.train.ledger import FORK
from unimm.train.loop import LAUNCH_SETTINGS, _differences, train

# what a branch may set apart from its stable run: its length, the branches it hosts, how it is launched
FREE = ("train.steps", "train.branches", *(f"train.{k}" for k in LAUNCH_SETTINGS))
COPIED = ("tokenizer", "codec.json", "image_stats.json", "trained_on.json", "metrics.jsonl")


def branch_config(stable: Path, steps: int, overrides: list[str] | None = None) -> Config:
    """The stable run's config with ``train.steps = steps`` (and ``overrides``, which may change only ``FREE``
    keys); ``ValueError`` naming the problem when the run is not WSD or another key differs."""
    if not (stable / "config.toml").is_file():
        raise FileNotFoundError(f"{stable} is not a run directory (no config.toml): nothing to fork")
    saved = load_config(stable / "config.toml")
    if saved.train.schedule != "wsd":
        raise ValueError(
            f"{stable} trains with train.schedule = {saved.train.schedule!r}: only a 'wsd' run has a stable phase "
            "to fork cooldown branches from"
        )
    given = [*(overrides or []), "train.branches=[]", f"train.steps={steps}"]
    cfg = load_config(stable / "config.toml", given)
    differ = [d for d in _differences(cfg, saved) if d.split(" ", 1)[0] not in FREE]
    if differ:
        raise ValueError(
            f"a branch trains its stable run's config with another train.steps; these differ from {stable}: "
            f"{', '.join(differ)}"
        )
    return cfg


def fork(stable: str | Path, out: str | Path, steps: int, overrides: list[str] | None = None, progress: bool = True):
    """Fork the WSD run ``stable`` at the fork step of a ``steps``-step budget into ``out`` and train the branch
    to ``steps``. Returns ``out``."""
    stable, out = Path(stable), Path(out)
    cfg = branch_config(stable, steps, overrides)
    saved = load_config(stable / "config.toml")
    at = fork_step(steps, cfg.train.cooldown)
    stable_end = fork_step(saved.train.steps, saved.train.cooldown)
    if at > stable_end:
        raise ValueError(
            f"budget {steps} forks at step {at}, after the stable phase of {stable} (it decays from step "
            f"{stable_end} of {saved.train.steps}); fork budgets up to {saved.train.steps}, or extend the stable run"
        )
    ckpt = stable / "checkpoints" / f"step_{at:07d}"
    if not (ckpt / "train_state.pt").is_file():
        kept = sorted(p.name for p in (stable / "checkpoints").glob("step_*"))
        raise FileNotFoundError(
            f"{stable} has no checkpoint at step {at}, the fork step of budget {steps} ({steps} * (1 - "
            f"{cfg.train.cooldown})); it keeps {', '.join(kept) or 'none'}: train it with train.branches "
            f"listing {steps} (train.branches = {saved.train.branches})"
        )
    if (out / "checkpoints" / "latest").exists() or (out / FORK).exists():
        raise FileExistsError(f"{out} already holds a run; choose another --out")
    _copy_run(stable, ckpt, out, cfg)
    state = load_state(ckpt / "train_state.pt")
    inherited = state.get("ledger", {}).get("total")
    record = {"run": str(stable.resolve()), "step": at, "stable_steps": saved.train.steps, "inherited": inherited}
    atomic_write_text(out / FORK, json.dumps(record, indent=2))
    return train(cfg, out, resume=True, progress=progress)


def _copy_run(stable: Path, ckpt: Path, out: Path, cfg: Config) -> None:
    """The branch directory: the stable run's files (``COPIED``), its checkpoint at the fork step as the latest,
    that checkpoint's weights as the run's ``model.safetensors``, and the branch's config."""
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = stable / name
        if src.is_dir():
            shutil.copytree(src, out / name, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, out / name)
    shutil.copytree(ckpt, out / "checkpoints" / ckpt.name, dirs_exist_ok=True)
    weights = ckpt / "ema.safetensors" if (ckpt / "ema.safetensors").is_file() else ckpt / "model.safetensors"
    if weights.is_file():  # a sharded (FSDP2) checkpoint has none: the next save writes it
        shutil.copy2(weights, out / "model.safetensors")
    atomic_write_text(out / "config.toml", dump_toml(cfg))
    atomic_write_text(out / "checkpoints" / "latest", ckpt.name)
