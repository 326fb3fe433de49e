"""The end-to-end demo: train a config, evaluate both directions, write a report with pictures.

``out/`` is the training run directory (see ``train/loop.py``); ``out/report/`` gets ``report.md``,
``report.json``, ``loss.png``, ``samples.png`` and ``captions.png``. A finished run is not retrained
and an interrupted one is resumed, so re-running the demo only re-evaluates.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from unimm.checkpoint import atomic_write, atomic_write_text, load_state
from unimm.config import Config, load_config
from unimm.data import load_split, templates_for
from unimm.eval.classifier import load_or_train_classifier
from unimm.eval.generation import generated_accuracy
from unimm.eval.understanding import caption_accuracy, vqa_accuracy
from unimm.io import grid_image
from unimm.models import UnifiedModel
from unimm.train import train
from unimm.train.loop import latest_checkpoint

console = Console()


def default_cache_dir() -> Path:
    """``$UNIMM_CACHE/classifiers`` (default ``~/.cache/unimm/classifiers``): shared across runs."""
    return Path(os.environ.get("UNIMM_CACHE", "~/.cache/unimm")).expanduser() / "classifiers"


class PhaseTimer:
    """Wall time per named phase, printed as each phase ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 2)
        console.print(f"[green]{name}[/green] done in {self.seconds[name]:.1f} s")


# ----------------------------------------------------------------------------------------------- training


def trained_steps(out: Path) -> int | None:
    """Step of the newest complete checkpoint in ``out``, or None if it holds none."""
    ckpt = latest_checkpoint(out)
    return None if ckpt is None else int(load_state(ckpt / "train_state.pt")["step"])


def ensure_trained(cfg: Config, out: Path, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg`` into ``out``, resume an unfinished run there, or skip a finished one.

    Returns {status, wall_s (this call), total_wall_s (over all demo calls that trained this run)}.
    """
    log = out / "report" / "training_time.json"
    done = trained_steps(out)
    t0 = time.perf_counter()
    if done is None:
        train(cfg, out, progress=progress)
        status, previous = "trained", 0.0
    else:
        target = load_config(out / "config.toml").train.steps  # the run's own config decides
        previous = json.loads(log.read_text())["total_wall_s"] if log.is_file() else None
        if done >= target and (out / "model.safetensors").is_file():
            return {"status": f"already trained ({done} steps); skipped", "wall_s": 0.0, "total_wall_s": previous}
        train(cfg, out, resume=True, progress=progress)
        status = f"resumed from step {done}"
    wall = round(time.perf_counter() - t0, 2)
    info = {"status": status, "wall_s": wall, "total_wall_s": None if previous is None else round(previous + wall, 2)}
    atomic_write_text(log, json.dumps(info))
    return info


def read_metrics(out: Path) -> list[dict[str, Any]]:
    path = out / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


# ----------------------------------------------------------------------------------------------- pictures


def _save(fig: Figure, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    return path


def _as_array(images: torch.Tensor, nrow: int, pad: int = 2) -> np.ndarray:
    return np.asarray(grid_image(images, nrow, pad=pad))


def plot_loss(rows: list[dict[str, Any]], path: Path) -> Path:
    """Total, text and image loss against step on a log scale."""
    fig = Figure(figsize=(7, 4), dpi=120)
    ax = fig.subplots()
    for key, label in (("loss", "total"), ("text_loss", "text (caption / VQA)"), ("image_loss", "image")):
        pts = [(r["step"], r[key]) for r in rows if key in r and r[key] > 0]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=label, lw=1.5)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="loss", title="training loss")
    ax.grid(True, which="both", alpha=0.3)
    if rows:
        ax.legend()
    return _save(fig, path)


def expert_load(rows: list[dict[str, Any]], last: int = 10) -> dict[str, Any] | None:
    """Tokens per expert summed over the last ``last`` logged steps (routed layers only), per layer and per
    modality, with the max/min load ratio inside each layer; None when the run has no routed layers."""
    logged = [r for r in rows if r.get("expert_tokens")][-last:]
    if not logged:
        return None
    per_layer = np.sum([r["expert_tokens"] for r in logged], axis=0)
    out: dict[str, Any] = {"steps": [r["step"] for r in logged], "per_layer": per_layer.tolist()}
    out["group_ratio_last_step"] = logged[-1].get("expert_load_ratio")  # worst layer, inside routing groups
    if all("expert_tokens_by_modality" in r for r in logged):
        out["by_modality"] = np.sum([r["expert_tokens_by_modality"] for r in logged], axis=0).tolist()
    return out


def plot_expert_load(load: dict[str, Any], path: Path) -> Path:
    """One bar group per layer: tokens routed to each expert (text and image stacked when known)."""
    per_layer = np.asarray(load["per_layer"], dtype=float)
    n_layers, n_exp = per_layer.shape
    fig = Figure(figsize=(max(6, 1.6 * n_layers), 3.5), dpi=120)
    axes = fig.subplots(1, n_layers, sharey=True, squeeze=False)[0]
    for i, ax in enumerate(axes):
        ax.bar(range(n_exp), per_layer[i] / per_layer[i].sum(), color="tab:blue")
        ax.axhline(1 / n_exp, color="gray", lw=0.8, ls="--")
        ax.set(title=f"layer {i}", xlabel="expert", xticks=range(n_exp))
    axes[0].set_ylabel("share of routed tokens")
    if "by_modality" in load:
        text, image = (np.asarray(v, dtype=float) for v in load["by_modality"][:2])
        total = text + image
        shares = " ".join(f"{t:.0%}" for t in text / np.maximum(total, 1))
        fig.text(0.5, -0.06, f"text share of each expert's tokens (all layers): {shares}", ha="center", fontsize=8)
    fig.suptitle(f"expert load, steps {load['steps'][0]}-{load['steps'][-1]} (dashed: uniform)", y=1.08)
    return _save(fig, path)


def plot_samples(gen: dict[str, Any], class_names: list[str], path: Path) -> Path:
    """One row per class of generated samples, labelled with the prompt(s) that drew them."""
    grid = gen["grid_images"]  # [K, g, C, H, W]
    k, g = grid.shape[:2]
    fig = Figure(figsize=(1.2 + 0.9 * g + 2.6, 0.95 * k + 0.6), dpi=120)
    axes = fig.subplots(k, 1, squeeze=False)[:, 0]
    for c, ax in enumerate(axes):
        ax.imshow(_as_array(grid[c], g), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        prompts = list(dict.fromkeys(gen["grid_prompts"][c]))
        label = f'"{prompts[0]}"' + (f" (+{len(prompts) - 1} other prompts)" if len(prompts) > 1 else "")
        label += f"\n{class_names[c]}: {gen['per_class_accuracy'][c]:.0%} judged correct"
        ax.text(-0.02, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=10)
    axes[0].set_title(f"generated samples (first {g} per class, seed {gen['seed']})", fontsize=11)
    return _save(fig, path)


def plot_captions(data, cap: dict[str, Any], vqa: dict[str, Any], path: Path) -> Path:
    """Test images with their generated caption (green: names the true class) and VQA answer."""
    examples = cap["examples"]
    answers = {e["index"]: e for e in vqa["examples"]}
    cols = min(4, len(examples))
    rows = (len(examples) + cols - 1) // cols
    fig = Figure(figsize=(3.0 * cols, 3.3 * rows), dpi=120)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, e in zip(axes, examples, strict=False):
        ax.imshow(_as_array(data.images[e["index"] : e["index"] + 1], 1, pad=0), cmap="gray", vmin=0, vmax=255)
        ok = e["parsed"] == e["label"]
        ax.set_title("\n".join(textwrap.wrap(e["text"] or "(empty)", 28)), color="green" if ok else "red", fontsize=9)
        if e["index"] in answers:
            a = answers[e["index"]]
            ax.text(0.5, -0.06, f"Q: {vqa['question']}\nA: {a['text']}", transform=ax.transAxes, ha="center",
                    va="top", fontsize=8, color="green" if a["parsed"] == a["label"] else "red")  # fmt: skip
    fig.suptitle("test images: generated caption (title) and VQA answer", fontsize=11)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------- report


def write_markdown(r: dict[str, Any], path: Path) -> Path:
    t, c, v, g, k = r["training"], r["caption"], r["vqa"], r["generation"], r["classifier"]
    names = r["class_names"]
    lines = [
        f"# unimm demo report: {r['name']}",
        "",
        f"Run directory `{r['run_dir']}`, dataset `{r['dataset']}` "
        f"({r['image_size']}x{r['image_size']}, {r['channels']} channel(s)), {t['params']:,} parameters.",
        "",
        "## Training",
        "",
        "| steps | status | training wall time | tokens/s | final loss | text loss | image loss |",
        "|---|---|---|---|---|---|---|",
        f"| {t['steps']} | {t['status']} | {_fmt(t['total_wall_s'], '.1f')} s | {_fmt(t['tokens_per_s'], '.0f')} "
        f"| {_fmt(t['final_loss'])} | {_fmt(t['final_text_loss'])} | {_fmt(t['final_image_loss'])} |",
        "",
        "tokens/s is the throughput logged in the last row of `metrics.jsonl` (packed tokens incl. padding).",
        "",
        *_tokenizer_lines(r.get("image_tokenizer")),
        *_expert_lines(r.get("experts")),
        "![training loss](loss.png)",
        "",
        "## Understanding (test split, greedy decoding)",
        "",
        "| metric | accuracy | correct / n | unparsed |",
        "|---|---|---|---|",
        f"| caption names the true class | {c['caption_accuracy']:.3f} | "
        f"{round(c['caption_accuracy'] * c['n'])} / {c['n']} | {c['unparsed']} |",
        f'| VQA: "{v["question"]}" | {v["vqa_accuracy"]:.3f} | '
        f"{round(v['vqa_accuracy'] * v['n'])} / {v['n']} | {v['unparsed']} |",
        "",
        "| # | true class | caption | VQA answer |",
        "|---|---|---|---|",
    ]
    answers = {e["index"]: e["text"] for e in v["examples"]}
    for e in c["examples"]:
        lines.append(f"| {e['index']} | {names[e['label']]} | {e['text']} | {answers.get(e['index'], '')} |")
    lines += [
        "",
        "![captions](captions.png)",
        "",
        "## Generation (text -> image)",
        "",
        f"**Generated accuracy {g['generated_accuracy']:.3f}** over {g['n']} images ({g['per_class']} per class, "
        f"seed {g['seed']}, {g['sampler']} sampler, {g['steps']} steps, CFG scale {g['cfg_scale']}), judged by a "
        f"CNN classifier whose own accuracy on the {k['n_test']} real test images is {k['test_accuracy']:.3f}.",
        "",
        "| class | accuracy | prompts |",
        "|---|---|---|",
    ]
    for i, name in enumerate(names):
        prompts = "; ".join(f'"{p}"' for p in g["prompts"][name])
        lines.append(f"| {name} | {g['per_class_accuracy'][i]:.2f} | {prompts} |")
    lines += ["", "![generated samples](samples.png)", "", "## Wall time per phase", "", "| phase | seconds |"]
    lines += ["|---|---|"] + [f"| {p} | {s:.1f} |" for p, s in r["timing_s"].items()]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _tokenizer_lines(stats: dict[str, float] | None) -> list[str]:
    """The image tokenizer's reconstruction (from ``codec.json``), when the run has a learned one."""
    if not stats:
        return []
    cells = ", ".join(f"{k} {v:.4g}" for k, v in stats.items())
    return [f"Image tokenizer (frozen while the transformer trains), on training images: {cells}.", ""]


def _expert_lines(load: dict[str, Any] | None) -> list[str]:
    if not load:
        return []
    ratios = [max(layer) / max(1, min(layer)) for layer in load["per_layer"]]
    group = load.get("group_ratio_last_step")
    worst = "an expert got no token" if group is None else f"{group:.2f}"
    return [
        f"Expert load over the last {len(load['steps'])} logged steps, max/min tokens per expert: "
        + ", ".join(f"layer {i} {r:.2f}" for i, r in enumerate(ratios))
        + " (1.0 = perfectly even; modality-grouped experts see different token counts per group). "
        f"Inside routing groups, worst layer, last logged step: {worst}.",
        "",
        "![expert load](experts.png)",
        "",
    ]


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)


def _print_summary(r: dict[str, Any]) -> None:
    table = Table(title="unimm demo")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("n", justify="right")
    table.add_row("caption accuracy", f"{r['caption']['caption_accuracy']:.3f}", str(r["caption"]["n"]))
    table.add_row("VQA accuracy", f"{r['vqa']['vqa_accuracy']:.3f}", str(r["vqa"]["n"]))
    table.add_row("generated accuracy", f"{r['generation']['generated_accuracy']:.3f}", str(r["generation"]["n"]))
    table.add_row("classifier test accuracy", f"{r['classifier']['test_accuracy']:.3f}", str(r["classifier"]["n_test"]))
    for phase, s in r["timing_s"].items():
        table.add_row(f"time: {phase}", f"{s:.1f} s", "")
    console.print(table)


# ----------------------------------------------------------------------------------------------- entry point


def run_demo(
    cfg: Config,
    out: Path,
    per_class: int = 100,
    seed: int = 0,
    cache_dir: Path | None = None,
    classifier_steps: int = 600,
    progress: bool = True,
) -> Path:
    """Train (or resume / reuse) ``cfg`` in ``out``, evaluate captioning, VQA and generation on the test
    split, write ``out/report/`` and return the path of ``report.md``."""
    out, timer = Path(out), PhaseTimer()
    report_dir = out / "report"
    with timer("train"):
        training = ensure_trained(cfg, out, progress)
        console.print(f"training: {training['status']}")
    with timer("load model and data"):
        model = UnifiedModel.from_pretrained(out)
        mcfg = model.cfg
        if mcfg.train.threads:
            torch.set_num_threads(mcfg.train.threads)
        test = load_split(mcfg.data.path, "test", mcfg.data.image_size, mcfg.data.channels)
        templates = templates_for(test)
    with timer("classifier"):
        clf, clf_acc = load_or_train_classifier(
            mcfg.data.path, "train", mcfg.data.image_size, mcfg.data.channels,
            cache_dir=cache_dir or default_cache_dir(), steps=classifier_steps, progress=progress,
        )  # fmt: skip
        console.print(f"classifier test accuracy {clf_acc:.4f} on {len(test)} images")
    with timer("caption"):
        cap = caption_accuracy(model, test, templates, progress=progress)
    with timer("vqa"):
        vqa = vqa_accuracy(model, test, templates, progress=progress)
    with timer("generate"):
        gen = generated_accuracy(model, clf, templates.class_names, templates, per_class, seed, progress=progress)
    rows = read_metrics(out)
    last = rows[-1] if rows else {}
    report: dict[str, Any] = {
        "name": mcfg.name,
        "run_dir": str(out),
        "dataset": str(mcfg.data.path),
        "image_size": mcfg.data.image_size,
        "channels": mcfg.data.channels,
        "class_names": templates.class_names,
        "training": {
            "steps": mcfg.train.steps,
            "params": last.get("params", sum(p.numel() for p in model.parameters())),
            "tokens_per_s": last.get("tokens_per_s"),
            "final_loss": last.get("loss"),
            "final_text_loss": last.get("text_loss"),
            "final_image_loss": last.get("image_loss"),
            **training,
        },
        "image_tokenizer": json.loads((out / "codec.json").read_text()) if (out / "codec.json").is_file() else None,
        "experts": expert_load(rows),
        "classifier": {"test_accuracy": clf_acc, "n_test": len(test)},
        "caption": cap,
        "vqa": vqa,
        "generation": {
            **{k: v for k, v in gen.items() if not k.startswith("grid_")},
            "sampler": mcfg.sample.sampler,
            "steps": model.writer.grid[0] * model.writer.grid[1] if mcfg.sample.sampler == "ar" else mcfg.sample.steps,
            "cfg_scale": mcfg.sample.cfg,
        },
    }
    with timer("report"):
        report_dir.mkdir(parents=True, exist_ok=True)
        plot_loss(rows, report_dir / "loss.png")
        if report["experts"] is not None:
            plot_expert_load(report["experts"], report_dir / "experts.png")
        plot_samples(gen, templates.class_names, report_dir / "samples.png")
        plot_captions(test, cap, vqa, report_dir / "captions.png")
    report["timing_s"] = timer.seconds
    atomic_write_text(report_dir / "report.json", json.dumps(report, indent=2))
    path = write_markdown(report, report_dir / "report.md")
    _print_summary(report)
    return path
