"""The end-to-end demo: train a config, evaluate it with ``unimm eval``'s harness, write a report with pictures.

``out/`` is the training run directory (see ``train/loop.py``); ``out/report/`` gets ``report.md``,
``report.json``, ``loss.png``, ``samples.png`` and ``captions.png``. A finished run is not retrained
and an interrupted one is resumed, so re-running the demo only re-evaluates. Every number comes from
``eval.harness.evaluate`` (suite ``demo``): ``unimm eval RUN --suite demo`` gives the same ones. A video
dataset goes to ``video_demo.py`` (the video metrics, an animated GIF and frame strips).
"""

from __future__ import annotations

import json
import math
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
from unimm.data import ImageTextData, load_split
from unimm.data.video_store import is_video_dataset
from unimm.document import Document, cell
from unimm.eval.harness import Suite, evaluate, generation_jobs
from unimm.eval.report import METRIC_HEADER, generation_rows, understanding_rows
from unimm.io import grid_image
from unimm.models import UnifiedModel
from unimm.provenance import provenance
from unimm.train import train
from unimm.train.checkpoints import latest_checkpoint
from unimm.train.ledger import part_stats

console = Console()


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


def plot_samples(
    images: torch.Tensor, jobs: list[tuple[str, int]], class_names: list[str], accuracy: list[float], seed: int,
    path: Path, per_row: int = 10,
) -> Path:  # fmt: skip
    """One row per class of generated samples (the first ``per_row`` of the harness's ``jobs`` for it),
    labelled with the prompt(s) that drew them and the share the classifier judged correct."""
    rows = [[i for i, (_, y) in enumerate(jobs) if y == c][:per_row] for c in range(len(class_names))]
    g = max(map(len, rows))
    fig = Figure(figsize=(1.2 + 0.9 * g + 2.6, 0.95 * len(rows) + 0.6), dpi=120)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for c, (ax, idx) in enumerate(zip(axes, rows, strict=True)):
        ax.imshow(_as_array(images[idx], g), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        prompts = list(dict.fromkeys(jobs[i][0] for i in idx))
        label = f'"{prompts[0]}"' + (f" (+{len(prompts) - 1} other prompts)" if len(prompts) > 1 else "")
        label += f"\n{class_names[c]}: {accuracy[c]:.0%} judged correct"
        ax.text(-0.02, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=10)
    axes[0].set_title(f"generated samples (first {g} per class, seed {seed})", fontsize=11)
    return _save(fig, path)


def plot_captions(data: ImageTextData, u: dict[str, Any], path: Path) -> Path:
    """Test images with their generated caption (green: names the true class) and VQA answer, from the
    harness's understanding ``examples``."""
    examples = u["examples"]
    cols = min(4, len(examples))
    rows = (len(examples) + cols - 1) // cols
    fig = Figure(figsize=(3.0 * cols, 3.3 * rows), dpi=120)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, e in zip(axes, examples, strict=False):
        ax.imshow(_as_array(data.images[e["index"] : e["index"] + 1], 1, pad=0), cmap="gray", vmin=0, vmax=255)
        ok = e["caption_class"] == e["label"]
        ax.set_title("\n".join(textwrap.wrap(e["caption"] or "(empty)", 28)), color="green" if ok else "red",
                     fontsize=9)  # fmt: skip
        if e["answer"] is not None:
            ax.text(0.5, -0.06, f"Q: {u['vqa_question']}\nA: {e['answer']}", transform=ax.transAxes, ha="center",
                    va="top", fontsize=8, color="green" if e["answer_class"] == e["label"] else "red")  # fmt: skip
    fig.suptitle("test images: generated caption (title) and VQA answer", fontsize=11)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------- report


def report_document(r: dict[str, Any], root: Path) -> Document:
    """``report.md`` as a document (images relative to ``root``); the metric tables are ``eval.md``'s."""
    t, e, smp = r["training"], r["eval"], r["sampling"]
    u, g, names = e["understanding"], e["generation"], r["class_names"]
    doc = Document(f"unimm demo report: {r['name']}")
    doc.paragraph(
        f"Run directory `{r['run_dir']}`, dataset `{r['dataset']}` "
        f"({r['image_size']}x{r['image_size']}, {r['channels']} channel(s)), {t['params']:,} parameters."
    )
    doc.heading("Training")
    doc.table(
        ["steps", "status", "training wall time", "tokens/s", "final loss", "text loss", "image loss"],
        [[str(t["steps"]), t["status"], f"{cell(t['total_wall_s'], '.1f')} s", cell(t["tokens_per_s"], ".0f"),
          *(cell(t[k], ".4f") for k in ("final_loss", "final_text_loss", "final_image_loss"))]],
    )  # fmt: skip
    doc.paragraph(
        "tokens/s is the throughput logged in the last row of `metrics.jsonl` (packed tokens incl. padding). "
        f"Evaluated weights: {t.get('weights', 'EMA (older run: not recorded)')}."
    )
    _tokenizer_paragraph(doc, r.get("image_tokenizer"))
    _expert_paragraph(doc, r.get("experts"), root)
    doc.image(root / "loss.png", "training loss")
    doc.heading("Understanding (test split, greedy decoding)")
    doc.paragraph(
        f"Measured by the `unimm eval` harness (suite `{e['suite']['name']}`, seed {e['seed']}). The VQA question "
        f'is "{u["vqa_question"]}". Texts naming no single class: {u["unparsed"]} captions, '
        f"{u['vqa_unparsed']} answers."
    )
    doc.table(METRIC_HEADER, understanding_rows(u))
    doc.table(
        ["#", "true class", "caption", "VQA answer"],
        [[str(x["index"]), names[x["label"]], x["caption"], cell(x["answer"])] for x in u["examples"]],
    )
    doc.image(root / "captions.png", "captions")
    doc.heading("Generation (text -> image)")
    doc.paragraph(
        f"**Generated accuracy {g['prompt_accuracy']:.3f}** over {g['prompt_accuracy_n']} images "
        f"({e['suite']['per_class']} per class, seed {g['seed']}, {smp['sampler']} sampler, {smp['steps']} steps, "
        f"CFG scale {smp['cfg_scale']}), judged by a CNN classifier whose own accuracy on the "
        f"{e['dataset']['test_images']} real test images is {e['evaluators']['classifier_test_accuracy']:.3f}."
    )
    doc.table(METRIC_HEADER, generation_rows(g))
    doc.table(
        ["class", "accuracy", "prompts"],
        [[name, f"{acc:.2f}", "; ".join(f'"{p}"' for p in r["prompts"][name])]
         for name, acc in zip(names, g["prompt_accuracy_per_class"], strict=True)],
    )  # fmt: skip
    doc.image(root / "samples.png", "generated samples")
    doc.heading("Wall time per phase")
    doc.table(["phase", "seconds"], [[phase, f"{sec:.1f}"] for phase, sec in r["timing_s"].items()])
    _provenance_section(doc, r["provenance"])
    return doc


def _provenance_section(doc: Document, p: dict[str, Any]) -> None:
    dirty = {True: " (with uncommitted changes to the code or configs)", None: " (tree state unknown)"}
    doc.heading("Provenance")
    doc.table(["what", "value"], [
        ["git commit", f"`{p['commit']}`{dirty.get(p['dirty'], '')}"],
        ["source SHA-256", f"`{p['source_sha256']}`"],
        ["code at evaluation", _evaluated_on(p)],
        ["config SHA-256 (`config.toml`)", f"`{p['config_sha256']}`"],
        ["command", f"`{p['command']}`" if p["command"] else "–"],
        ["wall time, training (all calls) / evaluation / this call",
         " / ".join(f"{cell(p['wall_s'][k], '.1f')} s" for k in ("train", "evaluate", "this_call"))],
        ["date (UTC)", p["date"]],
        ["software, machine", f"torch {p['torch']}, Python {p['python']}; {p['machine']}"],
    ])  # fmt: skip


def _evaluated_on(p: dict[str, Any]) -> str:
    """Whether the report ran on the code that trained the run (older reports: not recorded)."""
    if p.get("same_code") is None:
        return "not compared (training code not recorded)"
    if p["same_code"]:
        return "the same code"
    now = p["evaluated_on"]
    return f"other code: commit `{now['commit']}`, source SHA-256 `{now['source_sha256'][:12]}…`"


def _tokenizer_paragraph(doc: Document, stats: dict[str, float] | None) -> None:
    """The image tokenizer's reconstruction (from ``codec.json``), when the run has a learned one."""
    stats = part_stats(stats or {})  # its FLOPs are in the run's ledger.json
    if stats:
        cells = ", ".join(f"{k} {v:.4g}" for k, v in stats.items())
        doc.paragraph(f"Image tokenizer (frozen while the transformer trains), on training images: {cells}.")


def _expert_paragraph(doc: Document, load: dict[str, Any] | None, root: Path) -> None:
    if not load:
        return
    ratios = [max(layer) / max(1, min(layer)) for layer in load["per_layer"]]
    group = load.get("group_ratio_last_step")
    worst = "an expert got no token" if group is None else f"{group:.2f}"
    doc.paragraph(
        f"Expert load over the last {len(load['steps'])} logged steps, max/min tokens per expert: "
        + ", ".join(f"layer {i} {r:.2f}" for i, r in enumerate(ratios))
        + " (1.0 = perfectly even; modality-grouped experts see different token counts per group). "
        f"Inside routing groups, worst layer, last logged step: {worst}."
    )
    doc.image(root / "experts.png", "expert load")


def _print_summary(r: dict[str, Any]) -> None:
    e = r["eval"]
    table = Table(title="unimm demo")
    for name, justify in (("metric", "left"), ("value", "right"), ("n", "right")):
        table.add_column(name, justify=justify)
    for row in understanding_rows(e["understanding"]) + generation_rows(e["generation"]):
        table.add_row(*row)
    clf_acc = e["evaluators"]["classifier_test_accuracy"]
    table.add_row("classifier test accuracy", cell(clf_acc, ".3f"), str(e["dataset"]["test_images"]))
    for phase, sec in r["timing_s"].items():
        table.add_row(f"time: {phase}", f"{sec:.1f} s", "")
    console.print(table)


# ----------------------------------------------------------------------------------------------- entry point


def run_demo(
    cfg: Config,
    out: Path,
    suite: str | Suite = "demo",
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: bool = True,
    command: str | None = None,
) -> Path:
    """Train (or resume / reuse) ``cfg`` in ``out``, evaluate it with the harness (``suite``, ``seed``;
    evaluators from ``cache_dir``, default ``$UNIMM_CACHE``), write ``out/report/`` and return the path of
    ``report.md``. ``command`` (the command line that asked for it) is recorded in the report's provenance."""
    if is_video_dataset(cfg.data.path):  # its report holds the video metrics (video_demo.py)
        from unimm.video_demo import run_video_demo  # it imports this module's training and plotting helpers

        return run_video_demo(cfg, out, suite, seed, cache_dir, progress, command)
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
        test = load_split(mcfg.data.path, "test", mcfg.data.image_size, mcfg.data.channels, mcfg.data.class_names)
        if test.captions is not None or not test.class_names:
            raise ValueError(f"the demo reports class-labelled data; evaluate {mcfg.data.path} with `unimm eval`")
    with timer("evaluate"):
        result = evaluate(model, suite, seed=seed, cache_dir=cache_dir, run_dir=out, progress=progress)
    images = result.pop("_images")
    del result["_prompts"]
    jobs = generation_jobs(test, Suite(**result["suite"]))  # the harness's prompts and their classes, in order
    rows = read_metrics(out)
    last = rows[-1] if rows else {}
    report: dict[str, Any] = {
        "name": mcfg.name,
        "run_dir": str(out),
        "dataset": str(mcfg.data.path),
        "image_size": mcfg.data.image_size,
        "channels": mcfg.data.channels,
        "class_names": test.class_names,
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
        "image_tokenizer": json.loads((out / "codec.json").read_text()) if (out / "codec.json").is_file() else None,
        "experts": expert_load(rows),
        "sampling": {
            "sampler": mcfg.sample.sampler,
            "steps": math.prod(model.writer.grid) if mcfg.sample.sampler == "ar" else mcfg.sample.steps,
            "cfg_scale": mcfg.sample.cfg,
        },
        "prompts": {name: list(dict.fromkeys(p for p, y in jobs if y == c)) for c, name in enumerate(test.class_names)},
        "eval": result,
    }
    with timer("report"):
        report_dir.mkdir(parents=True, exist_ok=True)
        plot_loss(rows, report_dir / "loss.png")
        if report["experts"] is not None:
            plot_expert_load(report["experts"], report_dir / "experts.png")
        g = result["generation"]
        plot_samples(images, jobs, test.class_names, g["prompt_accuracy_per_class"], seed, report_dir / "samples.png")
        plot_captions(test, result["understanding"], report_dir / "captions.png")
    report["timing_s"] = timer.seconds
    wall = {"train": training["total_wall_s"], "evaluate": timer.seconds["evaluate"],
            "this_call": round(sum(timer.seconds.values()), 2)}  # fmt: skip
    report["provenance"] = provenance(out / "config.toml", wall, command)
    atomic_write_text(report_dir / "report.json", json.dumps(report, indent=2))
    path = report_dir / "report.md"
    atomic_write_text(path, report_document(report, report_dir).markdown(report_dir))
    _print_summary(report)
    return path
