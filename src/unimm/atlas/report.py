"""The atlas report: ``OUT/report.md`` (figures linked), ``OUT/report.html`` (figures embedded),
``OUT/report.json`` (the numbers) and ``OUT/figures/*.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unimm.atlas.config import AtlasConfig
from unimm.atlas.findings import CLAIMS, PRIMARY, QUESTIONS, check_claim, summarise
from unimm.atlas.plan import PlannedRun, budget_label
from unimm.atlas.plots import plot_expert_loads, plot_loss_vs_flops, plot_pareto, plot_quality_vs_flops, plot_samples
from unimm.atlas.results import Cell, RunResult, group_cells, load_result
from unimm.atlas.runner import run_dir
from unimm.checkpoint import atomic_write_text
from unimm.document import Document

RULE = (
    "**Reading the verdicts.** For a metric, d = mean(B) − mean(A) over training seeds. When both cells ran the "
    "same seeds (two or more) the runs are paired by seed, which shares data order and noise, and SE = sd(d_s)/√n "
    "over the per-seed differences; otherwise SE = √(s_A²/n_A + s_B²/n_B), s the standard deviation over seeds. "
    "A side is called better only when |d| > 2·SE **and** it wins in every seed pair (or every seed of it beats "
    "every seed of the other side) **and** |d| is above a floor that matters (0.005 for accuracies and other "
    "rates, 1 % of the value for FID, losses and the like). With one seed on a side there is no spread and no "
    "difference is claimed (inconclusive). With 2–3 seeds this is a screening rule, not a significance test. "
    "Pairs are matched on size, budget and the four strategy axes (image objective, understanding path, layer "
    "kind, text objective) except the one in question; other settings of the presets may differ and are listed "
    "with each pair."
)


def _first_metric(cells: list[Cell], kind: str) -> str | None:
    return next((m for m in PRIMARY[kind] if any(c.stat(m) for c in cells)), None)


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def _run_row(r: RunResult) -> list[str]:
    v, i, run = r.values, r.info, r.run
    status = r.status if r.status != "failed" else f"failed ({i.get('failure', '')})"
    flops = i.get("train_flops")
    spent = flops if run.budget_kind == "flops" else i.get("loop_s")
    off = f"{spent / run.budget - 1:+.1%}" if spent else "–"
    params = f"{i['params_total'] / 1e6:.2f} / {i['params_active'] / 1e6:.2f}" if "params_total" in i else "–"
    mem = f"{_fmt(i.get('peak_train_mib'), '.0f')} / {_fmt(i.get('peak_eval_mib'), '.0f')}"
    return [
        f"`{run.name}`", status, _fmt(i.get("trained_steps") or i.get("steps"), "d"), _fmt(flops, ".3g"), off, params,
        _fmt(i.get("train_wall_s"), ".0f"), _fmt(v.get("caption_accuracy")), _fmt(v.get("rank_accuracy")),
        _fmt(v.get("vqa_accuracy")), _fmt(v.get("caption_bleu_4")), _fmt(v.get("prompt_accuracy")),
        _fmt(v.get("fid"), ".2f"), _fmt(v.get("clip_score"), ".1f"), _fmt(v.get("task_loss")),
        _fmt(v.get("caption_latency_s")), _fmt(v.get("gen_latency_s")), mem,
    ]  # fmt: skip


RUN_HEADER = [
    "run", "status", "steps", "train FLOPs", "vs budget", "params total / active (M)", "train wall s",
    "caption acc", "rank acc", "VQA acc", "BLEU-4", "prompt acc", "FID", "CLIP score", "final train loss",
    "caption latency s", "gen latency s", "peak MiB train / eval",
]  # fmt: skip


def _overview(doc: Document, atlas: AtlasConfig, results: list[RunResult], out: Path) -> None:
    done = [r for r in results if r.status == "done"]
    failed = [r for r in results if r.status == "failed"]
    budgets = ", ".join(budget_label(atlas.budget.kind, v) for v in atlas.budget.values)
    seeds = sorted({r.run.seed for r in results})
    if atlas.description:
        doc.paragraph(atlas.description)
    doc.paragraph(
        f"{len(results)} planned runs: {len(done)} finished, {len(failed)} failed, "
        f"{len(results) - len(done) - len(failed)} not run yet. Budget per run: {budgets} "
        f"({'counted training FLOPs' if atlas.budget.kind == 'flops' else 'seconds of transformer training'}); "
        f"training seeds {seeds}; evaluation suite `{atlas.eval.suite}`, sampling seed {atlas.eval.seed} for every run."
    )
    doc.paragraph(
        "Each run's steps were set before training from real steps priced on its own data stream "
        "(`unimm/atlas/budget.py`): FLOPs as torch's FlopCounterMode counts forward and backward, the count "
        "training logs as `train_flops`. Preparation is outside the budget: the shared VQ tokenizer, a run's "
        "own VAE fit, ViT pre-training and the connector's decoder pre-training (their time is inside "
        "*train wall s*). Warm-up is capped at a fifth of a run's steps."
    )
    if failed:
        doc.bullets([f"`{r.run.name}`: {r.info.get('failure', 'failed')}" for r in failed])
    tokenizers = []
    for metrics in sorted(out.glob("tokenizers/*/metrics.json")):
        m = json.loads(metrics.read_text())
        tokenizers.append(f"`{metrics.parent.name}`: {m['steps']} steps, validation PSNR {m['val']['psnr']:.2f} dB")
    if tokenizers:
        doc.paragraph("Shared VQ tokenizer(s), used frozen by every VQ run of their dataset:")
        doc.bullets(tokenizers)


def _claims(doc: Document, cells: list[Cell]) -> list[dict[str, Any]]:
    doc.heading("Published findings, checked")
    checks = [check_claim(c, cells) for c in CLAIMS]
    doc.table(
        ["source", "claim", "this atlas", "why"],
        [[c.claim.source, c.claim.statement, f"**{c.verdict}**", c.reason] for c in checks],
    )
    for c in checks:
        if c.evidence:
            doc.paragraph(f"{c.claim.source.split(' (')[0]}: {c.verdict}. Evidence:")
            doc.bullets(c.evidence)
    return [{"source": c.claim.source, "claim": c.claim.statement, "verdict": c.verdict, "reason": c.reason,
             "evidence": c.evidence} for c in checks]  # fmt: skip


def _figures(doc: Document, cells: list[Cell], results: list[RunResult], folder: Path) -> None:
    und, gen = _first_metric(cells, "understanding"), _first_metric(cells, "generation")
    doc.heading("Understanding vs generation")
    path = plot_pareto(cells, und, gen, folder / "pareto.png") if und and gen else None
    if path:
        doc.image(path, "Pareto chart")
    else:
        doc.paragraph("No finished run with both metrics yet.")
    doc.heading("Quality vs training FLOPs")
    path = plot_quality_vs_flops(cells, [m for m in (und, gen) if m], folder / "quality_vs_flops.png")
    if path:
        doc.image(path, "quality vs FLOPs")
    else:
        doc.paragraph("One budget per cell: the curves need several budgets (see `configs/atlas/full.toml`).")
    path = plot_loss_vs_flops(results, folder / "loss_vs_flops.png")
    if path:
        doc.image(path, "training loss vs FLOPs")
    doc.heading("Samples for the same prompts")
    path = plot_samples(cells, folder / "samples.png")
    if path:
        doc.image(path, "samples side by side")
    else:
        doc.paragraph("No samples yet.")
    loads = plot_expert_loads(results, folder)
    if loads:
        doc.heading("Expert load (routed layers)")
        for r, p in loads:
            doc.paragraph(f"`{r.run.name}` (tokens per expert over the last 10 logged steps):")
            doc.image(p, f"expert load of {r.run.name}")


def write_report(atlas: AtlasConfig, runs: list[PlannedRun], out: Path) -> Path:
    """Read every run directory under ``out/runs`` and write the report; returns ``out/report.md``."""
    results = [load_result(r, run_dir(out, r)) for r in runs]
    cells = group_cells(results)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    doc = Document(f"unimm decision atlas: {atlas.name}")
    _overview(doc, atlas, results, out)
    claims = _claims(doc, cells)
    doc.heading("The survey's questions")
    summaries = {}
    for q in QUESTIONS:
        s = summarise(q, cells)
        summaries[q.key] = {"note": s.note, "pairs": [{"pair": h, "lines": lines} for h, lines in s.pairs]}
        doc.heading(f"{q.title}: {q.a_label} vs {q.b_label}", 3)
        if s.note:
            doc.paragraph(s.note)
        for head, lines in s.pairs:
            doc.paragraph(head)
            doc.bullets(lines)
    doc.paragraph(RULE)
    _figures(doc, cells, results, figures)
    doc.heading("Every run")
    doc.table(RUN_HEADER, [_run_row(r) for r in results])
    doc.paragraph(
        "Metrics from `unimm eval`'s harness (docs/eval.md); *final train loss* is the text loss plus the weighted "
        "image loss (router terms left out), mean of the last 5 logged steps; *vs budget* compares the counted "
        "FLOPs (or, for a wall-time budget, the training loop's seconds) with the budget; peak memory is the "
        "resident set of the training and of the evaluation process (GPU allocator peak on a GPU); *train wall s* "
        "counts finished training sessions (an interrupted one is not counted). Per-run reports: "
        "`runs/<run>/eval/eval.md`."
    )
    atomic_write_text(out / "report.md", doc.markdown(out))
    atomic_write_text(out / "report.html", doc.html())
    data = {
        "atlas": atlas.name,
        "runs": [{"name": r.run.name, "status": r.status, "values": r.values, "info": r.info} for r in results],
        "claims": claims,
        "questions": summaries,
    }
    atomic_write_text(out / "report.json", json.dumps(data, indent=2))
    return out / "report.md"
