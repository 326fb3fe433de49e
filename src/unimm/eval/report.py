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
from unimm.document import Document, cell
from unimm.eval.distribution import INTERVALS
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


METRIC_HEADER = ["metric", "value", "n"]
_UNDERSTANDING = (
    "caption_accuracy",
    "rank_accuracy",
    "caption_nll",
    "exact_match",
    "vqa_accuracy",
    "caption_bleu_4",
    "caption_cider",
    "caption_rouge_l",
)
_GENERATION = (
    "prompt_accuracy",
    "fid",
    "kid_mean",
    "precision",
    "recall",
    "clip_score",
    "clip_score_real",
    "heldout_image_loss",
)


def _rows(section: dict[str, Any], keys: tuple[str, ...], counts: dict[str, str]) -> list[list[str]]:
    return [[k, cell(section[k]), cell(section[counts.get(k, "n")])] for k in keys if k in section]


def understanding_rows(u: dict[str, Any]) -> list[list[str]]:
    """(metric, value, n) for the understanding numbers an evaluation has; shared by eval.md and the demo."""
    return _rows(u, _UNDERSTANDING, {"vqa_accuracy": "vqa_n", "rank_accuracy": "rank_n", "caption_nll": "rank_n"})


def with_interval(value: Any, ci: list[float] | None) -> str:
    """A value and its interval: ``12.3 [10.1, 15.2]`` (the value alone without one)."""
    return cell(value) if ci is None or value is None else f"{cell(value)} [{cell(ci[0])}, {cell(ci[1])}]"


def generation_rows(g: dict[str, Any]) -> list[list[str]]:
    """(metric, value, n) for the generation numbers an evaluation has, the distribution metrics with their
    bootstrap interval and "generated / real" counts; shared by eval.md and the demo."""
    geneval = g.get("geneval") or {}
    checks = tuple(k for k in geneval if not k.endswith("_n"))
    extra = [[f"geneval {k}", *rest] for k, *rest in _rows(geneval, checks, {k: k + "_n" for k in checks})]
    counts = {"prompt_accuracy": "prompt_accuracy_n", "heldout_image_loss": "heldout_image_loss_n"}
    rows = _rows(g, _GENERATION, counts)
    for row in rows:
        if row[0] in INTERVALS and "n_real" in g:
            row[1:] = [with_interval(g[row[0]], g.get(INTERVALS[row[0]][0])), f"{g['n_generated']} / {g['n_real']}"]
    return rows + extra


def distribution_text(g: dict[str, Any], features: str | None) -> str:
    """How the distribution metrics were measured, and why any of them is missing (empty without them)."""
    if "n_real" not in g:
        return ""
    b = g["bootstrap"]
    text = (
        f"FID, KID and precision / recall (k = {g['k']}) compare {g['n_generated']} generated with {g['n_real']} "
        f"real test images on {g['feature_dim']}-d features ({features}); in brackets their {b['level']:.0%} "
        f"bootstrap interval ({b['reps']} resamples of both sets, seed {b['seed']}; {b['interval']}: docs/eval.md)."
    )
    return " ".join([text, *(g[k] + "." for k in ("fid_note", "distribution_note") if g.get(k))])


def heldout_note(g: dict[str, Any]) -> str:
    """What ``heldout_image_loss`` is, under the generation table (or why it is missing)."""
    if g.get("heldout_image_loss_note"):
        return f"No held-out image loss: {g['heldout_image_loss_note']}"
    return (
        "`heldout_image_loss`: the writer's loss of held-out test images after the prompts they would be generated "
        "from (`Writer.eval_loss`: nats per VQ code, or squared error per latent element at fixed noise levels), "
        "comparable only between runs with the same writer kind and codec; `caption_nll` is its text counterpart."
    )


def step_rows(g: dict[str, Any]) -> list[list[str]]:
    """``generation.step_sweep`` as rows: steps (native when the writer's count is fixed), passes, accuracy, n, s."""
    return [[cell(p["steps"]) if p["steps"] is not None else "native", cell(p["passes"]), cell(p["prompt_accuracy"]),
             cell(p["n"]), cell(p["s_per_image"])] for p in g["step_sweep"]]  # fmt: skip


def flops(value: float | None) -> str:
    """A FLOP count in three significant digits, "–" when missing."""
    return "–" if value is None else f"{float(value):.3g}"


def ledger_rows(ledger: dict[str, Any] | None) -> list[list[str]]:
    """The run's FLOP ledger (``ledger.json``) as rows: preparation by item, shared parts, the frozen encoder
    charged once per distinct input, the run's total and the total with shared parts."""
    if not ledger:
        return []
    rows = [[f"preparation FLOPs: {k}", flops(v)] for k, v in ledger["preparation"].items()]
    rows += [[f"shared part FLOPs: {k} ({v['path']})", flops(v["flops"])] for k, v in ledger["shared"].items()]
    e = ledger["frozen_encoders"]
    rows.append(["frozen encoder FLOPs, once per distinct input (per input x inputs)",
                 f"{flops(e['flops'])} ({flops(e['flops_per_input'])} x {e['distinct_inputs']:,})"])  # fmt: skip
    rows.append(["total FLOPs of the run (with shared parts)",
                 f"{flops(ledger['total'])} ({flops(ledger['total_with_shared'])})"])  # fmt: skip
    return rows


def eval_document(result: dict[str, Any], title: str, out: Path) -> Document:
    """``eval.md`` as a document (images relative to ``out``)."""
    u, g, c, e = result["understanding"], result["generation"], result["cost"], result["evaluators"]
    doc = Document(f"unimm eval: {title}")
    doc.paragraph(
        f"Suite `{result['suite']['name']}`, seed {result['seed']}, dataset `{result['dataset']['path']}` "
        f"({result['dataset']['test_images']} test images). Evaluators trained in-project on the same dataset: "
        f"classifier test accuracy {cell(e['classifier_test_accuracy'])}, CLIP test retrieval accuracy "
        f"{cell(e['clip_test_retrieval_accuracy'])}; FID features: {cell(e['fid_features'])}."
    )
    doc.heading("Understanding")
    doc.table(METRIC_HEADER, understanding_rows(u))
    if u.get("rank_note"):
        doc.paragraph(f"No rank accuracy or caption NLL: {u['rank_note']}")
    doc.heading("Generation")
    doc.table(METRIC_HEADER, generation_rows(g))
    if "heldout_image_loss" in g:
        doc.paragraph(heldout_note(g))
    if g.get("step_sweep"):
        doc.heading("Quality per inference step", 3)
        doc.table(["sampler steps", "backbone passes / image", "prompt accuracy", "n", "s / image"], step_rows(g))
        if g.get("step_sweep_note"):
            doc.paragraph(g["step_sweep_note"])
    if text := distribution_text(g, e["fid_features"]):
        doc.paragraph(text)
    t, p, i = c["training"], c["params"], c.get("inference", {})
    doc.heading("Cost")
    doc.table(["what", "value"], [
        ["parameters total / active / trainable", f"{p['total']:,} / {p['active']:,} / {p['trainable']:,}"],
        ["training-step FLOPs (counted, frozen encoder apart)", flops(t.get("train_flops"))],
        *ledger_rows(t.get("ledger")),
        ["training steps / tokens / wall s", " / ".join(cell(t.get(k)) for k in ("step", "tokens", "train_wall_s"))],
        ["caption: samples/s, latency of one (s)", f"{cell(u['samples_per_s'])}, {cell(u['latency_s'])}"],
        ["caption ranking: samples/s", cell(u.get("rank_samples_per_s"))],
        ["held-out image loss: samples/s", cell(g.get("heldout_samples_per_s"))],
        ["generation: samples/s, latency of one (s)", f"{cell(g['samples_per_s'])}, {cell(g['latency_s'])}"],
        ["inference FLOPs per caption / per generated image",
         f"{flops(i.get('flops_per_caption'))} / {flops(i.get('flops_per_image'))}"],
        ["peak memory (MiB)", cell(c["peak_memory_mib"])],
    ])  # fmt: skip
    doc.image(out / "samples.png", "samples")
    doc.table(
        ["#", "caption", "VQA answer"], [[str(x["index"]), x["caption"], cell(x.get("answer"))] for x in u["examples"]]
    )
    return doc


def write_eval(result: dict[str, Any], out: str | Path, title: str) -> dict[str, Path]:
    """Write eval.json, eval.md and the sample grids into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images, prompts = result.get("_images"), result.get("_prompts")
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    atomic_write_text(out / "eval.json", json.dumps(clean, indent=2))
    atomic_write_text(out / "eval.md", eval_document(clean, title, out).markdown(out))
    paths = {"json": out / "eval.json", "md": out / "eval.md"}
    if images is not None:
        paths["samples"] = write_sample_grids(images, prompts, out)[0]
    return paths
