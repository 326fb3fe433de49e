"""Write an evaluation to disk: ``eval.json`` (every number with its sample count and seed), ``eval.md``,
``samples.png`` (one row per prompt) and ``samples/NNN_<prompt>.png`` (one grid per prompt)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from unimm.checkpoint import atomic_write, atomic_write_text
from unimm.io import grid_image


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


def by_prompt(images, prompts: list[str]) -> dict[str, list[int]]:
    """Distinct prompts in order of first use -> indices of their images."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    return groups


def write_sample_grids(images, prompts: list[str], out: Path, per_prompt: int = 8, rows: int = 30) -> list[Path]:
    """One PNG grid per distinct prompt under ``out/samples/`` plus an overview ``out/samples.png``."""
    groups = by_prompt(images, prompts)
    folder = out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, (prompt, idx) in enumerate(groups.items()):
        path = folder / f"{n:03d}_{_slug(prompt)}.png"
        grid = grid_image(images[idx[:per_prompt]], per_prompt, scale=2)
        atomic_write(path, lambda tmp, g=grid: g.save(tmp, format="png"))
        paths.append(path)
    shown = list(groups.items())[:rows]
    fig = Figure(figsize=(2.8 + 0.8 * per_prompt, 0.8 * len(shown) + 0.5), dpi=110)
    axes = fig.subplots(len(shown), 1, squeeze=False)[:, 0]
    for ax, (prompt, idx) in zip(axes, shown, strict=True):
        arr = np.asarray(grid_image(images[idx[:per_prompt]], per_prompt))
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(-0.02, 0.5, f'"{prompt}"', transform=ax.transAxes, ha="right", va="center", fontsize=9)
    overview = out / "samples.png"
    atomic_write(overview, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    return [overview, *paths]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "–" if v is None else str(v)


def markdown(result: dict[str, Any], title: str) -> str:
    u, g, c, e = result["understanding"], result["generation"], result["cost"], result["evaluators"]
    lines = [
        f"# unimm eval: {title}",
        "",
        f"Suite `{result['suite']['name']}`, seed {result['seed']}, dataset `{result['dataset']['path']}` "
        f"({result['dataset']['test_images']} test images). Evaluators trained in-project on the same dataset: "
        f"classifier test accuracy {_fmt(e['classifier_test_accuracy'])}, CLIP test retrieval accuracy "
        f"{_fmt(e['clip_test_retrieval_accuracy'])}; FID features: {e['fid_features']}.",
        "",
        "## Understanding",
        "",
        "| metric | value | n |",
        "|---|---|---|",
    ]
    for key in (
        "caption_accuracy",
        "exact_match",
        "vqa_accuracy",
        "caption_bleu_4",
        "caption_cider",
        "caption_rouge_l",
    ):
        if key in u:
            n = u.get("vqa_n") if key == "vqa_accuracy" else u["n"]
            lines.append(f"| {key} | {_fmt(u[key])} | {n} |")
    lines += ["", "## Generation", "", "| metric | value | n |", "|---|---|---|"]
    for key in ("prompt_accuracy", "fid", "kid_mean", "precision", "recall", "clip_score", "clip_score_real"):
        if key in g:
            n = g.get("prompt_accuracy_n") if key == "prompt_accuracy" else g["n"]
            lines.append(f"| {key} | {_fmt(g[key])} | {n} |")
    for key, v in (g.get("geneval") or {}).items():
        if not key.endswith("_n"):
            lines.append(f"| geneval {key} | {_fmt(v)} | {g['geneval'][key + '_n']} |")
    t = c["training"]
    lines += [
        "",
        "## Cost",
        "",
        "| what | value |",
        "|---|---|",
        f"| parameters total / active / trainable | {c['params']['total']:,} / {c['params']['active']:,} / "
        f"{c['params']['trainable']:,} |",
        f"| training FLOPs (counted) | {_fmt(t.get('train_flops'))} |",
        f"| training steps / tokens / wall s | {_fmt(t.get('step'))} / {_fmt(t.get('tokens'))} / "
        f"{_fmt(t.get('train_wall_s'))} |",
        f"| caption: samples/s, latency of one (s) | {_fmt(u['samples_per_s'])}, {_fmt(u['latency_s'])} |",
        f"| generation: samples/s, latency of one (s) | {_fmt(g['samples_per_s'])}, {_fmt(g['latency_s'])} |",
        f"| peak memory (MiB) | {_fmt(c['peak_memory_mib'])} |",
        "",
        "![samples](samples.png)",
        "",
        "| # | caption | VQA answer |",
        "|---|---|---|",
    ]
    for ex in u["examples"]:
        lines.append(f"| {ex['index']} | {ex['caption']} | {ex.get('answer', '–')} |")
    return "\n".join(lines) + "\n"


def write_eval(result: dict[str, Any], out: str | Path, title: str) -> dict[str, Path]:
    """Write eval.json, eval.md and the sample grids into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images, prompts = result.get("_images"), result.get("_prompts")
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    atomic_write_text(out / "eval.json", json.dumps(clean, indent=2))
    atomic_write_text(out / "eval.md", markdown(clean, title))
    paths = {"json": out / "eval.json", "md": out / "eval.md"}
    if images is not None:
        paths["samples"] = write_sample_grids(images, prompts, out)[0]
    return paths
