"""Write a video evaluation to disk: ``eval.json``, ``eval.md``, ``samples.gif`` (the generated clips playing in a
grid, one clip per cell) and ``strips.png`` (one row per clip, its frames left to right)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from unimm.checkpoint import atomic_write_text
from unimm.io import grid_image, save_animated_grid, save_image


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def frame_strips(clips: torch.Tensor, path: Path, scale: int = 3) -> Path:
    """Clips [N, T, C, H, W] -> one PNG with a row per clip, its T frames side by side."""
    rows = grid_image(clips.flatten(0, 1), clips.shape[1], scale=scale)
    return save_image(rows if rows.mode in ("L", "RGB") else rows.convert("RGB"), path)


def video_markdown(result: dict[str, Any], title: str) -> str:
    u, g, ref = result["understanding"], result["generation"], result["generation"]["reference"]
    lines = [
        f"# {title}: video evaluation",
        "",
        f"Dataset {result['dataset']['name']} ({result['dataset']['test_clips']} test clips of "
        f"{result['dataset']['frames']} frames), seed {result['seed']}; frame classifier test accuracy "
        f"{_pct(result['evaluators']['frame_classifier_test_accuracy'])}.",
        "",
        f"## Generation ({g['n']} clips, one per test caption)",
        "",
        "| metric | generated | real test clips |",
        "|---|---|---|",
    ]
    names = {
        "frame_prompt_accuracy": "per-frame prompt accuracy",
        "clip_prompt_accuracy": "prompted digit in every frame",
        "same_class_every_frame": "temporal consistency (same class every frame)",
        "frame_consistency": "frame consistency (digit as in frame 0)",
        "motion_accuracy": "motion accuracy (first direction)",
        "motion_accuracy_segments": "motion accuracy (every segment, bounce included)",
    }
    lines += [f"| {name} | {_pct(g[key])} | {_pct(ref[key])} |" for key, name in names.items()]
    if "frechet" in g:
        f = g["frechet"]
        fid = "n/a" if f["fid"] is None else f"{f['fid']:.2f}"
        note = f" ({f['fid_note']})" if f.get("fid_note") else ""
        lines += [
            "",
            f"FVD-style Fréchet distance to the real test clips: {fid}{note}, KID {f['kid_mean']:.4f}, precision "
            f"{_pct(f['precision'])}, recall {_pct(f['recall'])}; features: "
            f"{result['evaluators']['frechet_features']}.",
        ]
    lines += [
        "",
        "![samples](samples.gif)",
        "",
        "Frame strips (one row per clip): ![strips](strips.png)",
        "",
        f"## Understanding ({u['n']} clips, {u['vqa_n']} questions)",
        "",
        f"Caption exact match {_pct(u['caption_exact_match'])}; VQA accuracy {_pct(u['vqa_accuracy'])}; direction "
        f"question {_pct(u['direction_vqa_accuracy'])}.",
        "",
        "| question | accuracy |",
        "|---|---|",
        *(f"| {q} | {_pct(a)} |" for q, a in u["vqa_accuracy_by_question"].items()),
    ]
    return "\n".join(lines) + "\n"


def write_video_eval(result: dict[str, Any], out: str | Path, title: str) -> dict[str, Path]:
    """Write eval.json, eval.md, samples.gif and strips.png into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    clean["generation"]["prompts"] = result.get("_prompts", [])
    atomic_write_text(out / "eval.json", json.dumps(clean, indent=2))
    atomic_write_text(out / "eval.md", video_markdown(clean, title))
    clips = result["_clips"][:16]
    return {
        "json": out / "eval.json",
        "md": out / "eval.md",
        "gif": save_animated_grid(clips, out / "samples.gif"),
        "strips": frame_strips(clips, out / "strips.png"),
    }
