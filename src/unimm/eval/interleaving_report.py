"""Write an interleaved evaluation (``eval/interleaving.py``) to disk: ``eval.json``, ``eval.md`` and
``interleaved.png`` (one row per task: the reply's images in slot order, blank where a slot got none)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from unimm.checkpoint import atomic_write_text
from unimm.eval.editing_report import _rate
from unimm.eval.geneval import CHECKS
from unimm.io import save_grid


def interleaved_markdown(result: dict[str, Any], title: str) -> str:
    r = result["interleaved"]
    low, high = r["slot_accuracy"]["bootstrap_ci"]
    lines = [
        f"# {title}: interleaved evaluation",
        "",
        f"{result['dataset']['tasks']} {result['dataset']['kind']} tasks, seed {result['seed']}; Wilson 95 % "
        f"intervals; slot accuracy's bootstrap 95 % interval over tasks: [{low:.1%}, {high:.1%}]. Replies stopped "
        f"by: {', '.join(f'{k} {v}' for k, v in r['stops'].items())}."
        + (" Images were resized to the stored 32 px before scoring." if r["scored_resized"] else ""),
        "",
        "| tasks | slot accuracy | task accuracy | consistency |",
        "|---|---|---|---|",
    ]
    for name, row in [("all", r), *r["per_kind"].items()]:
        lines.append(
            f"| {name} | {_rate(row['slot_accuracy'])} | {_rate(row['task_accuracy'])} | {_rate(row['consistency'])} |"
        )
    checks = r.get("shapes_slot_checks") or []
    if checks:
        names = [c for c in CHECKS if any(c in row for row in checks)]
        lines += [
            "",
            "Shapes slots by GenEval check (why a slot fails: the named object missing, a wrong object count, no "
            "object of the named colour, the pair not in the named relation; a slot without an image fails all):",
            "",
            "| slot | " + " | ".join(names) + " | no image |",
            "|---|" + "---|" * (len(names) + 1),
        ]
        for i, row in enumerate(checks, 1):
            cells = [_rate(row[c]) if c in row else "n/a" for c in names]
            lines.append(f"| {i} | " + " | ".join(cells) + f" | {row['missing']} |")
    lines += ["", "| prompt | reply text | images | slots right |", "|---|---|---|---|"]
    for row in r["results"][:20]:
        text = row["text"].replace("|", "\\|") or "(none)"
        lines.append(f"| {row['prompt']} | {text} | {row['images']} | {sum(row['slots'])} / {len(row['slots'])} |")
    return "\n".join(lines) + "\n"


def write_interleaved_eval(result: dict[str, Any], out: str | Path, title: str, rows: int = 16) -> dict[str, Path]:
    """Write eval.json (without the images), eval.md and interleaved.png into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    atomic_write_text(out / "eval.json", json.dumps(clean, indent=2))
    atomic_write_text(out / "eval.md", interleaved_markdown(clean, title))
    shown = result["_images"][:rows]
    slots = max([len(t["slots"]) for t in clean["interleaved"]["results"][:rows]] + [1])
    blank = torch.full_like(next((im for ims in shown for im in ims), torch.zeros(1, 8, 8)), -1.0)
    grid = [ims[i] if i < len(ims) else blank for ims in shown for i in range(slots)]
    png = save_grid(torch.stack(grid), out / "interleaved.png", nrow=slots) if grid else None
    return {"json": out / "eval.json", "md": out / "eval.md", "png": png}
