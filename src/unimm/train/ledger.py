"""A run's FLOP ledger, ``RUN/ledger.json``: every FLOP that went into the run's model, by item.

- ``preparation``: what the run fitted before its transformer trained, each counted by ``unimm.flops`` as
  training counts (``codec.steps``: the VAE / VQ fit; ``codec.scale_pass``: the VAE's latent scale, one encoder
  pass over the training images; ``reader.pretrain_steps``: ViT pre-training; ``writer.decoder_latents`` and
  ``writer.pretrain_steps``: the connector decoder's latents and pre-training). Read from the parts' ``flops.*``
  entries in ``codec.json``.
- ``shared``: parts trained once outside the run and loaded (``codec.tokenizer``: a ``unimm tokenizer train``
  output, its FLOPs from its own ``ledger.json``; None when it has none) with their path; whoever compares
  runs decides whether each run is charged for them (``total_with_shared``) or they are one separate line.
- ``frozen_encoders``: the frozen codec's encoder, charged once per distinct input (``train/frozen.py``).
- ``training_steps``: the counted training steps (``train_flops``), the frozen encoder excluded.

``total`` is the run's own items summed; ``total_with_shared`` adds the shared ones. A cooldown branch
(``unimm fork``, ``train/fork.py``) continues its stable run's tally, so its items hold the stable phase too;
its ``fork`` entry names the stable run and fork step, ``inherited`` (the stable run's ledger total at the
fork: what the branch did not spend itself) and ``own`` (``total - inherited``: what branching cost).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unimm.checkpoint import atomic_write_text


def items(prep: dict[str, Any], prefix: str) -> dict[str, float | None]:
    """The ``prefix``-named entries of a preparation record (``codec.json``), without the prefix."""
    return {k.removeprefix(prefix): v for k, v in prep.items() if k.startswith(prefix)}


def part_stats(prep: dict[str, Any]) -> dict[str, Any]:
    """A preparation record without its ledger entries: what the parts report about themselves."""
    return {k: v for k, v in prep.items() if not k.startswith(("flops.", "shared_flops.")) and k != "prep_wall_s"}


def build_ledger(
    prep: dict[str, Any],
    tokenizer: str | None,
    steps: int,
    train_flops: float | None,
    encoder_flops_per_input: float,
    distinct_inputs: int,
    inputs: int,
    fork: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ledger of a run from its preparation record, its shared tokenizer's path and its training so far;
    ``fork`` is a cooldown branch's ``fork.json`` (``read_fork``)."""
    preparation = items(prep, "flops.")
    shared = {k: {"flops": v, "path": tokenizer} for k, v in items(prep, "shared_flops.").items()}
    encoders = {
        "flops_per_input": encoder_flops_per_input,
        "distinct_inputs": distinct_inputs,
        "inputs": inputs,
        "flops": round(encoder_flops_per_input * distinct_inputs),
    }
    parts = [*preparation.values(), encoders["flops"], train_flops]
    total = None if any(v is None for v in parts) else sum(parts)
    shared_flops = [s["flops"] for s in shared.values()]
    with_shared = None if total is None or None in shared_flops else total + sum(shared_flops)
    ledger = {
        "preparation": preparation,
        "shared": shared,
        "frozen_encoders": encoders,
        "training_steps": {"steps": steps, "flops": train_flops},
        "total": total,
        "total_with_shared": with_shared,
    }
    if fork is not None:
        inherited = fork["inherited"]
        own = None if total is None or inherited is None else total - inherited
        ledger["fork"] = {"run": fork["run"], "step": fork["step"], "inherited": inherited, "own": own}
    return ledger


FORK = "fork.json"  # in a cooldown branch's run directory: {run, step, stable_steps, inherited}


def read_fork(run_dir: str | Path) -> dict[str, Any] | None:
    """A cooldown branch's fork record (None for a run that was not forked)."""
    path = Path(run_dir) / FORK
    return json.loads(path.read_text()) if path.is_file() else None


def write_ledger(out: Path, ledger: dict[str, Any]) -> None:
    atomic_write_text(out / "ledger.json", json.dumps(ledger, indent=2))


def read_ledger(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "ledger.json"
    return json.loads(path.read_text()) if path.is_file() else None
