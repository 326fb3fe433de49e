"""Write an editing evaluation (``eval/editing.py``) to disk: ``eval.json``, ``eval.md`` and ``edits.png`` (one
row per edit: source, edited, true target)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from unimm.checkpoint import atomic_write_text
from unimm.io import save_grid


def _rate(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return "n/a"
    low, high = r["ci"]
    return f"{r['rate']:.1%} [{low:.1%}, {high:.1%}] (n={r['n']})"


def editing_markdown(result: dict[str, Any], title: str) -> str:
    e = result["editing"]
    lines = [
        f"# {title}: editing evaluation",
        "",
        f"{result['dataset']['test_edits']} {result['dataset'].get('split', 'test')} edits of "
        f"{result['dataset']['path']}, seed {result['seed']}; "
        f"Wilson 95 % intervals; tolerance {e['tolerance']} px, pixel threshold {e['pixel_threshold']}."
        + (" Images were resized to the stored size before scoring." if e["scored_resized"] else ""),
        "",
        "| edits | edit accuracy | preservation | both | mean pixel distance |",
        "|---|---|---|---|---|",
    ]
    for name, r in [("all", e), *e["per_kind"].items()]:
        distance = "n/a" if r["pixel_distance"] is None else f"{r['pixel_distance']:.2f}"
        lines.append(f"| {name} | {_rate(r['edit'])} | {_rate(r['preservation'])} | {_rate(r['both'])} | {distance} |")
    failures = e.get("failures")
    if failures and (any(failures["edit"].values()) or any(failures["preservation"].values())):
        lines += ["", "Why edits failed (images per reason; see `eval/edits.py`):", ""]
        for measure, counts in failures.items():
            shown = ", ".join(f"{why} {n}" for why, n in counts.items() if n) or "none"
            lines.append(f"- {measure}: {shown}")
    ceiling = e.get("codec_ceiling")
    if ceiling is not None:
        lines += [
            "",
            "Codec ceiling (the true targets encoded and decoded by the writer's codec, scored the same way: the "
            "most a model writing through this codec can reach): edit accuracy "
            f"{_rate(ceiling['edit'])}, preservation {_rate(ceiling['preservation'])}, both {_rate(ceiling['both'])}, "
            f"mean pixel distance {ceiling['pixel_distance']:.2f}.",
        ]
    return "\n".join(lines) + "\n"


def write_editing_eval(result: dict[str, Any], out: str | Path, title: str, rows: int = 16) -> dict[str, Path]:
    """Write eval.json (without the per-image tensors), eval.md and edits.png into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    clean["editing"]["instructions"] = result["_instructions"]
    atomic_write_text(out / "eval.json", json.dumps(clean, indent=2))
    atomic_write_text(out / "eval.md", editing_markdown(clean, title))
    triples = torch.stack([result[k][:rows] for k in ("_sources", "_edited", "_targets")], 1).flatten(0, 1)
    return {"json": out / "eval.json", "md": out / "eval.md", "png": save_grid(triples, out / "edits.png", nrow=3)}
