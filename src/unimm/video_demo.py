"""The video demo: train a config on a video dataset, evaluate it with ``eval/video.py`` (the numbers of
``unimm eval`` on a video run), write ``out/report/``: ``report.json``, ``report.md``, ``loss.png`` and the
video evaluation's ``eval.json``, ``eval.md``, ``samples.gif`` (the generated clips playing) and ``strips.png``
(their frames in rows). A finished run is not retrained and an interrupted one is resumed, as for images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from unimm.checkpoint import atomic_write_text
from unimm.config import Config
from unimm.demo import PhaseTimer, console, ensure_trained, plot_loss, read_metrics
from unimm.eval.suites import Suite
from unimm.eval.video import evaluate_video
from unimm.eval.video_report import video_markdown, write_video_eval
from unimm.models import UnifiedModel
from unimm.provenance import provenance


def video_report_markdown(report: dict[str, Any]) -> str:
    """report.md: the training facts and provenance above the video evaluation's own markdown."""
    t, p = report["training"], report["provenance"]
    head = [
        f"# Video demo: {report['name']}",
        "",
        f"Dataset `{report['dataset']}`: clips of {report['frames']} frames of {report['image_size']} px. "
        f"Trained {t['steps']} steps ({t['status']}; training wall time {t['total_wall_s']} s over every demo "
        f"call that trained it), {t['params']:,} parameters, final loss {t['final_loss']}; weights {t['weights']}.",
        "",
        "![loss](loss.png)",
        "",
        "Phase times (this call): " + ", ".join(f"{k} {v:.1f} s" for k, v in report["timing_s"].items()) + ".",
        "",
        f"Provenance: trained on commit {p['commit']}{' (dirty)' if p['dirty'] else ''}; command "
        f"`{p.get('command') or 'n/a'}`.",
        "",
    ]
    body = video_markdown(report["eval"], report["name"]).split("\n", 1)[1]  # its title replaced by ours
    return "\n".join(head) + body


def run_video_demo(
    cfg: Config,
    out: Path,
    suite: str | Suite = "demo",
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: bool = True,
    command: str | None = None,
) -> Path:
    """Train (or resume / reuse) the video run ``cfg`` in ``out``, evaluate it as ``unimm eval`` does a video run
    (``suite``: its ``clips_n`` clips generated and understood), write ``out/report/``; returns ``report.md``."""
    out, timer = Path(out), PhaseTimer()
    report_dir = out / "report"
    with timer("train"):
        training = ensure_trained(cfg, out, progress)
    with timer("load model"):
        model = UnifiedModel.from_pretrained(out)
        if model.cfg.train.threads:
            torch.set_num_threads(model.cfg.train.threads)
    with timer("evaluate"):
        result = evaluate_video(model, suite, seed=seed, cache_dir=cache_dir, progress=progress)
    with timer("report"):
        report_dir.mkdir(parents=True, exist_ok=True)
        paths = write_video_eval(result, report_dir, title=model.cfg.name)  # eval.json, samples.gif, strips.png
        rows = read_metrics(out)
        plot_loss(rows, report_dir / "loss.png")
    mcfg, last = model.cfg, (rows[-1] if rows else {})
    report: dict[str, Any] = {
        "name": mcfg.name,
        "kind": "video",
        "run_dir": str(out),
        "dataset": str(mcfg.data.path),
        "frames": mcfg.data.frames,
        "image_size": mcfg.data.image_size,
        "channels": mcfg.data.channels,
        "training": {
            "steps": mcfg.train.steps,
            "params": last.get("params", sum(p.numel() for p in model.parameters())),
            "tokens_per_s": last.get("tokens_per_s"),
            "final_loss": last.get("loss"),
            "final_text_loss": last.get("text_loss"),
            "final_image_loss": last.get("image_loss"),
            "weights": f"EMA, bias-corrected, decay {mcfg.train.ema}" if mcfg.train.ema > 0 else "raw (train.ema = 0)",
            **training,
        },
        "sampling": {"sampler": mcfg.sample.sampler, "steps": mcfg.sample.steps, "cfg_scale": mcfg.sample.cfg},
        "eval": json.loads(paths["json"].read_text()),
        "files": {k: p.name for k, p in paths.items()},
        "timing_s": timer.seconds,
    }
    wall = {"train": training["total_wall_s"], "evaluate": timer.seconds["evaluate"],
            "this_call": round(sum(timer.seconds.values()), 2)}  # fmt: skip
    report["provenance"] = provenance(out / "config.toml", wall, command)
    atomic_write_text(report_dir / "report.json", json.dumps(report, indent=2))
    path = report_dir / "report.md"
    atomic_write_text(path, video_report_markdown(report))
    g, u = report["eval"]["generation"], report["eval"]["understanding"]
    console.print(
        f"per-frame prompt accuracy {g['frame_prompt_accuracy']:.1%}, motion accuracy {g['motion_accuracy']:.1%}, "
        f"temporal consistency {g['same_class_every_frame']:.1%}, caption exact match "
        f"{u['caption_exact_match']:.1%}, direction QA "
        + ("n/a" if u["direction_vqa_accuracy"] is None else f"{u['direction_vqa_accuracy']:.1%}")
    )
    return path
