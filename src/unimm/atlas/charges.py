"""What a run's budget pays for besides its training steps, by the atlas's ``[budget]`` settings.

``scratch``: the run's own counted preparation (``flops.*`` of its ``codec.json``; for a ``wall_s`` budget its
wall seconds) and, when ``shared_tokenizer = "charged"``, the whole fit of the shared tokenizer it loads (from
the tokenizer's ``ledger.json``). ``pretrained``: nothing; preparation spent the side budget.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unimm.train.ledger import items

DEFAULT = {"regime": "scratch", "side_flops": None, "shared_tokenizer": "charged"}  # specs written before the ledger


def settings(spec: dict[str, Any]) -> dict[str, Any]:
    """A run spec's ledger settings (regime, side_flops, shared_tokenizer)."""
    return {**DEFAULT, **spec.get("ledger", {})}


def tokenizer_ledger(path: str | None) -> dict[str, Any] | None:
    """The ``ledger.json`` of a shared tokenizer directory, if any."""
    ledger = Path(path) / "ledger.json" if path else None
    return json.loads(ledger.read_text()) if ledger is not None and ledger.is_file() else None


def shared_charge(spec: dict[str, Any], tokenizer: str | None, kind: str) -> dict[str, float]:
    """The shared tokenizer's FLOPs (wall seconds for a ``wall_s`` budget) when the run's budget pays for it."""
    s = settings(spec)
    if tokenizer is None or s["regime"] != "scratch" or s["shared_tokenizer"] != "charged":
        return {}
    ledger = tokenizer_ledger(tokenizer)
    if ledger is None:
        raise ValueError(f"{tokenizer} has no ledger.json: its FLOPs are unknown and cannot be charged; retrain it")
    return {"codec.tokenizer": float(ledger["total"] if kind == "flops" else ledger["wall_s"])}


def preparation_charge(spec: dict[str, Any], prep: dict[str, Any], kind: str) -> dict[str, float]:
    """The run's own preparation, when its budget pays for it: FLOPs by item, or its wall seconds."""
    if settings(spec)["regime"] != "scratch":
        return {}
    if kind == "flops":
        return {k: float(v) for k, v in items(prep, "flops.").items()}
    return {"preparation wall s": float(prep["prep_wall_s"])} if "prep_wall_s" in prep else {}
