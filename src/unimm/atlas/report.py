"""The atlas report: ``OUT/report.md`` (figures linked), ``OUT/report.html`` (figures embedded),
``OUT/report.json`` (the numbers) and ``OUT/figures/*.png``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unimm.atlas.comparison import Comparison
from unimm.atlas.config import AtlasConfig
from unimm.atlas.findings import PRIMARY, ClaimCheck, check_claims, summarise_all
from unimm.atlas.metrics import HIGHER_IS_BETTER, VIDEO_ANALOGUE
from unimm.atlas.null_rates import false_verdict_rate
from unimm.atlas.plan import PlannedRun, budget_label
from unimm.atlas.plots import (
    plot_expert_loads,
    plot_loss_vs_flops,
    plot_pareto,
    plot_quality_per_step,
    plot_quality_vs_flops,
    plot_samples,
)
from unimm.atlas.results import Cell, RunResult, group_cells, load_result
from unimm.atlas.runner import run_dir
from unimm.atlas.scaling_report import scaling_section
from unimm.atlas.schedule_check import interaction_table, schedule_checks, schedule_interactions
from unimm.atlas.schedule_check import table as schedule_table
from unimm.atlas.steps import masked_vs_ar, step_points, wilson, writer_kind
from unimm.atlas.throughput import summary_text, sweep_summary
from unimm.checkpoint import atomic_write_text
from unimm.document import Document

RULE = (
    "**Reading the verdicts.** For a metric, d = mean(B) − mean(A) over training seeds. When both cells ran the "
    "same seeds (two or more) the runs are paired by seed, which shares data order and noise, and the per-seed "
    "differences get a paired t-test (n − 1 degrees of freedom); otherwise, with two or more seeds on each side, "
    "Welch's t-test (Welch–Satterthwaite degrees of freedom). p-values are two-sided, from the t distribution; "
    "the 95 % confidence interval of d is the t-interval of the same test. With no spread at all (ties of a "
    "discrete metric) the test is undefined and p is taken as 1. Multiple comparisons are "
    "Holm-corrected: the checks of published findings are one family (every matched pair of every check, on the "
    "metric and direction the atlas TOML declares before the runs), the comparisons under the survey's "
    "questions another. A side is called better only when its Holm-adjusted p is below 0.05 **and** |d| is "
    "above a floor that matters (0.005 for accuracies and other rates, 1 % of the value for FID, losses and the "
    "like). A check *agrees* (*disagrees*) when a test is significant with the declared side better (worse) and "
    "none the other way, and is *inconclusive* otherwise; with one seed on a side there is no test and no "
    "verdict (*not enough seeds*). With two seeds a paired test has one degree of freedom: only a difference "
    "that is many times its seed-to-seed variation is significant, so *inconclusive* is the common outcome. "
    "Pairs are matched on size, budget and the four strategy axes (image objective, understanding path, layer "
    "kind, text objective) except the one in question; other settings of the presets may differ and are listed "
    "with each pair."
)


def _first_metric(cells: list[Cell], kind: str) -> str | None:
    return next((m for m in PRIMARY[kind] if any(c.stat(m) for c in cells)), None)


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def _flops(v: float | None) -> str:
    return _fmt(v, ".3g")


def _fid(v: float | None, ci: list[float] | None) -> str:
    """FID with its bootstrap interval from eval.json, ``12.34 [10.10, 15.20]``."""
    return _fmt(v, ".2f") if v is None or not ci else f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _or_clips(v: dict, metric: str) -> str:
    """The image metric, or on a video run its analogue (VIDEO_ANALOGUE) marked as read on clips."""
    clips = v.get(VIDEO_ANALOGUE[metric])
    return _fmt(v.get(metric)) if v.get(metric) is not None or clips is None else f"{clips:.3f} (clips)"


def _run_row(r: RunResult) -> list[str]:
    v, i, run = r.values, r.info, r.run
    status = r.status if r.status != "failed" else f"failed ({i.get('failure', '')})"
    flops = r.ledger.total if r.ledger else None
    spent = (r.ledger.budgeted if r.ledger else None) if run.budget_kind == "flops" else i.get("loop_s")
    off = f"{spent / run.budget - 1:+.1%}" if spent else "–"
    params = f"{i['params_total'] / 1e6:.2f} / {i['params_active'] / 1e6:.2f}" if "params_total" in i else "–"
    mem = f"{_fmt(i.get('peak_train_mib'), '.0f')} / {_fmt(i.get('peak_eval_mib'), '.0f')}"
    return [
        f"`{run.name}`", run.dataset, status, _fmt(i.get("trained_steps") or i.get("steps"), "d"),
        _fmt(flops, ".3g"), off, params,
        _fmt(i.get("train_wall_s"), ".0f"), _or_clips(v, "caption_accuracy"), _fmt(v.get("rank_accuracy")),
        _fmt(v.get("vqa_accuracy")), _fmt(v.get("caption_bleu_4")), _or_clips(v, "prompt_accuracy"),
        _fid(v.get("fid"), i.get("fid_ci")), _fmt(v.get("clip_score"), ".1f"), _fmt(v.get("task_loss")),
        _fmt(v.get("caption_latency_s")), _fmt(v.get("gen_latency_s")), mem,
    ]  # fmt: skip


RUN_HEADER = [
    "run", "data", "status", "steps", "total FLOPs", "vs budget", "params total / active (M)", "train wall s",
    "caption acc", "rank acc", "VQA acc", "BLEU-4", "prompt acc", "FID [95 % CI]", "CLIP score", "final train loss",
    "caption latency s", "gen latency s", "peak MiB train / eval",
]  # fmt: skip


def _datasets(results: list[RunResult]) -> str:
    names = list(dict.fromkeys(r.run.dataset for r in results))
    more = " (cells are compared only on the same data)" if len(names) > 1 else ""
    return ("data " if len(names) == 1 else "datasets ") + ", ".join(f"`{n}`" for n in names) + more


def _overview(doc: Document, atlas: AtlasConfig, results: list[RunResult], out: Path) -> None:
    done = [r for r in results if r.status == "done"]
    failed = [r for r in results if r.status == "failed"]
    budgets = ", ".join(budget_label(atlas.budget.kind, v) for v in atlas.budget.values)
    seeds = sorted({r.run.seed for r in results})
    if atlas.description:
        doc.paragraph(atlas.description)
    doc.paragraph(
        f"{len(results)} planned runs: {len(done)} finished, {len(failed)} failed, "
        f"{len(results) - len(done) - len(failed)} not run yet, on {_datasets(results)}. Budget per run: {budgets} "
        f"({'counted FLOPs' if atlas.budget.kind == 'flops' else 'seconds'}, regime `{atlas.budget.regime}`); "
        f"training seeds {seeds}; evaluation suite `{atlas.eval.suite}`, sampling seed {atlas.eval.seed} for every run."
    )
    if atlas.left_out:
        doc.paragraph(
            f"**A part of the atlas** (`--only`): {', '.join(f'`{s.name}`' for s in atlas.strategies)}. The TOML's "
            f"other {len(atlas.left_out)} strategies are not in this report (their runs are reported on their own)."
        )
    for regime in sorted(atlas.regimes, key=lambda r: r != atlas.budget.regime):
        doc.paragraph(LEDGER[regime].format(side=atlas.budget.side_flops or 0.0))
    other = [s.name for s in atlas.strategies if (s.regime or atlas.budget.regime) != atlas.budget.regime]
    if other:
        doc.paragraph(
            f"Strategies in the other regime: {', '.join(f'`{n}`' for n in other)}. They prepare the same parts "
            "with the same side-budget steps as the pretrained runs, but in the scratch regime the run's budget pays "
            "for that preparation (and the shared tokenizer), so they train fewer steps: the two regimes of one "
            "strategy show what the ledger's choice does to it. Cells are compared only within a regime."
        )
    doc.paragraph(SHARED[atlas.budget.shared_tokenizer])
    if failed:
        doc.bullets([f"`{r.run.name}`: {r.info.get('failure', 'failed')}" for r in failed])
    tokenizers = []
    for metrics in sorted(out.glob("tokenizers/*/metrics.json")):
        m, ledger = json.loads(metrics.read_text()), metrics.parent / "ledger.json"
        spent = f"{json.loads(ledger.read_text())['total']:.3g} FLOPs" if ledger.is_file() else "FLOPs not recorded"
        tokenizers.append(
            f"`{metrics.parent.name}`: {m['steps']} steps, {spent}, validation PSNR {m['val']['psnr']:.2f} dB"
        )
    if tokenizers:
        doc.paragraph("Shared VQ tokenizer(s), used frozen by every VQ run of their dataset:")
        doc.bullets(tokenizers)


LEDGER = {
    "scratch": (
        "**The ledger: regime `scratch`.** Everything that goes into a run's model is trained inside its budget "
        "and counted with the counter training uses (torch's FlopCounterMode, forward and backward; "
        "`unimm/atlas/budget.py`): its own preparation (VAE or VQ fit, ViT pre-training, decoder pre-training), "
        "then training steps with what is left, priced on real steps of the run's own data stream. Frozen "
        "encoders (the VAE's or the VQ tokenizer's encoder) are charged once per distinct input, as if their "
        "outputs were precomputed, for every strategy alike; their per-step forward is left out of the step "
        "count. Warm-up is capped at a fifth of a run's steps."
    ),
    "pretrained": (
        "**The ledger: regime `pretrained`.** Every part a run prepares (VAE or VQ fit, ViT pre-training, decoder "
        "pre-training) and the shared VQ tokenizer get the same side budget of {side:.3g} FLOPs each, converted "
        "to steps by pricing one of the part's steps (`unimm/atlas/side.py`); then the parts are frozen or "
        "fine-tuned as the presets say, and the main budget pays for the training steps (priced on real steps of "
        "the run's own data stream) and for the frozen encoders, charged once per distinct input as if their "
        "outputs were precomputed, for every strategy alike. The side budget is its own line (*side FLOPs*); "
        "counts are torch's FlopCounterMode, forward and backward, as training counts. Warm-up is capped at a "
        "fifth of a run's steps."
    ),
}
SHARED = {
    "charged": "The shared VQ tokenizer is **charged in full to every run that uses it** "
    '(`[budget] shared_tokenizer = "charged"`).',
    "separate": "The shared VQ tokenizer is **not charged to the runs**: it is reported once, as a separate line "
    '(`[budget] shared_tokenizer = "separate"`), equal for every run that uses it.',
}


STEPS_NOTE = (
    "UniDisc (Swerdlow et al. 2025, arXiv 2503.20853) claims that masked discrete diffusion reaches a given image "
    "quality with fewer forward passes than autoregressive decoding, which needs one per image token. Every run "
    "generates a small fixed set of class prompts again (`[eval] step_sweep`: the same prompts and sampling seed "
    "for every run) at each listed sampler step count; *passes* are the backbone forward passes each image took, "
    "counted (a guided pass runs the conditional and unconditional rows together; a decoder or head after the "
    "backbone, as connector's DiT or mar's per-patch head, is not counted). An ar-codes writer takes one pass per "
    "code whatever the step count, so it is one point at its own count. A pass is not a unit of cost: a KV-cached "
    "AR pass runs one new position, a masked or diffusion pass the whole image, so *s / image* is the wall-clock "
    "cost. Accuracies are means over seeds with Wilson 95 % intervals of the pooled images."
)
DESCRIPTIVE = (
    "This comparison is **descriptive, not a verdict**: an AR cell has no step count to match, so there is no "
    "paired test, and it is not in the Holm family of the checks. *Reaches* means the masked cell's mean accuracy "
    "is at least the AR cell's; with this few images per point the intervals show how much of that is noise."
)


def _steps(doc: Document, cells: list[Cell], folder: Path) -> dict[str, Any]:
    """The section "Quality per inference step": figure, table, masked-vs-AR sentences; returns report.json's part."""
    doc.heading("Quality per inference step")
    swept = [(c, step_points(c)) for c in cells]
    swept = [(c, ps) for c, ps in swept if ps]
    if not swept:
        doc.paragraph("No run has a step sweep (`[eval] step_sweep` in the atlas TOML).")
        return {"cells": [], "masked_vs_ar": []}
    doc.paragraph(STEPS_NOTE)
    path = plot_quality_per_step(cells, folder / "quality_per_step.png")
    if path:
        doc.image(path, "prompt accuracy vs backbone passes per image")
    doc.table(["cell", "writer", "sampler steps", "passes / image", "prompt acc [Wilson 95 %]", "n", "s / image"],
              [[f"`{c.label}`", writer_kind(c), "native" if p.steps is None else str(p.steps), f"{p.passes:g}",
                p.text(), str(p.n), _fmt(p.s_per_image, ".3g")] for c, ps in swept for p in ps])  # fmt: skip
    reaches = masked_vs_ar(cells)
    if reaches:
        doc.paragraph("Masked codes against autoregressive codes (the fewest passes at which each masked cell "
                      "reaches the AR cell's accuracy at its native pass count):")  # fmt: skip
        doc.bullets([r.sentence() for r in reaches])
        doc.paragraph(DESCRIPTIVE)
    return {
        "cells": [{"cell": c.key, "budget": c.budget, "writer": writer_kind(c),
                   "points": [{"steps": p.steps, "passes": p.passes, "prompt_accuracy": p.accuracy,
                               "ci95": list(p.interval), "n": p.n, "s_per_image": p.s_per_image} for p in ps]}
                  for c, ps in swept],
        "masked_vs_ar": [r.as_json() for r in reaches],
    }  # fmt: skip


GENEVAL = ("object", "count", "colour", "position", "overall")
COMPOSITIONAL = (
    "Runs on data with free captions and exact scenes (the generated shapes: one or two coloured shapes, their "
    "colour, count and left/right or above/below relation): understanding is the free caption reproduced word for "
    "word (*exact match*, and BLEU-4 / CIDEr-D against the references), more than naming one of a few classes; "
    "generation is read back from the pixels by the renderer's own rules, GenEval-style (`eval/geneval.py`): the "
    "share of images with the prompted object(s), count, colour(s) and relation, and all of them at once "
    "(*overall*). A check whose matched pairs include these runs tests them on its declared metric like any other."
)


def _compositional(doc: Document, results: list[RunResult]) -> list[dict[str, Any]]:
    """The free-caption and GenEval-style numbers of runs on compositional data (e.g. shapes), when any ran."""
    rows = [r for r in results if r.status == "done" and ("exact_match" in r.values or "geneval_overall" in r.values)]
    if not rows:
        return []
    doc.heading("Compositional data: free captions and GenEval-style checks")
    doc.paragraph(COMPOSITIONAL)
    keys = ["exact_match", "caption_bleu_4", "caption_cider", "prompt_accuracy", *(f"geneval_{c}" for c in GENEVAL)]
    doc.table(["run", "data", "exact match", "BLEU-4", "CIDEr-D", "prompt acc",
               *(f"GenEval {c}" for c in GENEVAL)],
              [[f"`{r.run.name}`", r.run.dataset, *(_fmt(r.values.get(k)) for k in keys)] for r in rows])  # fmt: skip
    return [{"name": r.run.name, "data": r.run.dataset, **{k: r.values.get(k) for k in keys}} for r in rows]


FURTHER_KEYS = ("edit_accuracy", "edit_preservation", "edit_both", "slot_accuracy", "interleaved_task_accuracy",
                "interleaved_consistency")  # fmt: skip
FURTHER_TEXT = (
    "Runs of strategies with further suites (`suites` in the atlas TOML, atlas/further.py): on an edit dataset, "
    "*edit* is the share of held-out edits whose target object changed as asked and *preserved* the share where "
    "nothing else changed (*both*: both at once), read from the pixels by `detect_objects`; on digits or shapes, "
    "*slot acc* is the share of an interleaved reply's image slots with the right content, *task acc* the share of "
    "replies with every slot right, *consistency* the share of shapes replies keeping the first image's object "
    "(docs/eval.md). A check may declare any of them as its metric."
)


def _further(doc: Document, results: list[RunResult]) -> list[dict[str, Any]]:
    """The edit and interleaved numbers of runs evaluated with those further suites, when any were."""
    rows = [r for r in results if r.status == "done" and any(k in r.values for k in FURTHER_KEYS)]
    if not rows:
        return []
    doc.heading("Editing and interleaved generation")
    doc.paragraph(FURTHER_TEXT)
    cells = [[f"`{r.run.name}`", r.run.dataset, *(_fmt(r.values.get(k)) for k in FURTHER_KEYS)] for r in rows]
    doc.table(["run", "data", "edit", "preserved", "both", "slot acc", "task acc", "consistency"], cells)
    return [{"name": r.run.name, "data": r.run.dataset, **{k: r.values.get(k) for k in FURTHER_KEYS}} for r in rows]


def _ledger(doc: Document, results: list[RunResult]) -> list[dict[str, Any]]:
    """The FLOP ledger of every run: preparation by item, the shared tokenizer, the frozen encoders, the training
    steps, the total, what the main budget paid and inference FLOPs; returns it for report.json."""
    doc.heading("The FLOP ledger")
    rows, data = [], []
    for r in results:
        g, i = r.ledger, r.info
        if g is None:
            rows.append([f"`{r.run.name}`"] + ["–"] * 9)
            continue
        prep = "; ".join(f"{k} {v:.3g}" for k, v in g.preparation.items()) or "none"
        shared = "; ".join(f"{k} {_flops(v)}" for k, v in g.shared.items())
        shared = f"{shared} ({'charged' if g.shared_charged else 'separate'})" if shared else "–"
        rows.append([f"`{r.run.name}`", prep, shared, _flops(g.encoders), _flops(g.training), _flops(g.total),
                     _flops(g.budgeted), _flops(g.side), _flops(i.get("flops_per_caption")),
                     _flops(i.get("flops_per_image"))])  # fmt: skip
        data.append({"name": r.run.name, "parts": g.parts(), "total": g.total, "budgeted": g.budgeted,
                     "side": g.side, "shared": g.shared, "shared_charged": g.shared_charged})  # fmt: skip
    doc.table(["run", "preparation FLOPs (by item)", "shared tokenizer FLOPs", "frozen encoders, once",
               "training steps", "total", "main budget paid", "side FLOPs", "FLOPs / caption", "FLOPs / image"],
              rows)  # fmt: skip
    doc.paragraph(
        "*total* is every counted FLOP that went into the run's model: its preparation items, the shared "
        "tokenizer when charged, the frozen encoders once per distinct input (a shifted copy of an image counts "
        "as an input of its own) and the training steps. *main budget paid* is the total in the scratch regime "
        "and the frozen encoders plus the training steps in the pretrained one, whose preparation is the *side "
        "FLOPs*. Not in any run: the evaluators (classifier, CLIP), which only measure, and the probes of "
        "reconstruction and accuracy after a fit. *FLOPs / caption* and *FLOPs / image* are inference, counted "
        "on one batch of 4 of each by the evaluation."
    )
    return data


def _per_test(check: ClaimCheck, cell: Callable[[Comparison], str]) -> str:
    """One table cell: ``cell(comparison)`` for each of the check's tests, named by pair when there are several."""
    if len(check.tests) == 1:
        return cell(check.tests[0][1])
    return "; ".join(f"{p.a.key} vs {p.b.key}: {cell(c)}" for p, c in check.tests) or "–"


def _ci(c: Comparison) -> str:
    if c.test is None:
        return f"{c.diff:+.3f} (one seed on a side)"
    lo, hi = c.test.ci()
    return f"{c.diff:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _pvalue(p: float | None) -> str:
    return "–" if p is None else f"{p:.3g}"


def _test_json(c: Comparison) -> dict[str, Any]:
    t = c.test
    lo, hi = t.ci() if t else (None, None)
    return {
        "metric": c.metric,
        "diff": c.diff,
        "ci95": [lo, hi],
        "test": t.kind if t else None,
        "df": t.df if t else None,
        "p": t.p if t else None,
        "p_holm": c.p_adjusted,
        "outcome": c.outcome,
    }


def _claims(doc: Document, atlas: AtlasConfig, cells: list[Cell]) -> tuple[list[dict[str, Any]], dict | None]:
    """The checks' section; (each check as JSON, the rule's simulated null rate for this family or None)."""
    doc.heading("Published findings, checked")
    if not atlas.checks:
        doc.paragraph("This atlas declares no checks (`[[checks]]` in its TOML).")
        return [], None
    checks = check_claims(atlas.checks, cells)
    rows = []
    for c in checks:
        k = c.check
        better, worse = (k.b, k.a) if k.expects_b else (k.a, k.b)
        direction = "higher" if HIGHER_IS_BETTER[k.metric] else "lower"
        declared = f"`{k.metric}` ({direction} is better): `{k.axis}` {' / '.join(better)} beats {' / '.join(worse)}"
        rows.append([k.source, k.statement, declared, f"**{c.verdict}**", _per_test(c, _ci),
                     _per_test(c, lambda x: _pvalue(x.test.p if x.test else None)),
                     _per_test(c, lambda x: _pvalue(x.p_adjusted)), c.reason])  # fmt: skip
    doc.table(["source", "claim", "declared test", "this atlas", "difference B − A [95 % CI]", "p", "p (Holm)",
               "why"], rows)  # fmt: skip
    null = _null_rate(checks)
    if null:
        doc.paragraph(
            f"**The rule under the null.** Simulated reports of {null['tests']} tests between identical strategies "
            f"over {null['seeds']} paired seeds ({null['reps']:,} each; `unimm/atlas/null_rates.py`) claim an *agrees* "
            f"or *disagrees* in {_rate(null, 'normal')} of reports on a continuous metric (a loss) and "
            f"{_rate(null, 'binomial')} on an accuracy over 200 samples: the false-verdict rate of a report of this "
            "shape, against the nominal 5 % (in brackets the simulation's own 95 % Wilson interval)."
        )
    for c in checks:
        if c.tests:
            doc.paragraph(f"{c.check.source.split(' (')[0]}: {c.verdict}. Evidence:")
            doc.bullets(c.evidence)
    return [{"source": c.check.source, "claim": c.check.statement, "declared": c.check.model_dump(),
             "verdict": c.verdict, "reason": c.reason, "evidence": c.evidence,
             "tests": [{"pair": [p.a.key, p.b.key], **_test_json(x)} for p, x in c.tests]}
            for c in checks], null  # fmt: skip


def _schedule_controls(
    doc: Document, cells: list[Cell], metrics: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Cooldown branches against dedicated cosine runs of the same cells (only when the atlas has controls), and
    whether the differences between controlled cells depend on the schedule."""
    checks = schedule_checks(cells, metrics)
    if not checks:
        return [], []
    doc.heading("Cooldown branches against dedicated runs")
    doc.paragraph(
        "Each control trains the same cell, budget and seeds as a run of its own with the preset's warmup + cosine "
        "schedule; the ladder's run at that budget is a cooldown branch of its stable run (warmup-stable-decay, "
        "docs/scaling.md), which warms up as its smallest budget does (a fifth of that budget's steps at most), so "
        "the two can also differ in warm-up. *branch − dedicated*: the difference of the means, with the paired "
        "t-test's 95 % interval and p over the shared seeds (no Holm: nothing is claimed to differ); *within seed "
        "noise*: |d| at most the two cells' pooled seed-to-seed s.d.; *equivalent*: the whole interval within ± "
        "that s.d."
    )
    doc.table(*schedule_table(checks))
    pairs = schedule_interactions(checks)
    interactions = [row for i in pairs if (row := i.row()) is not None]
    if interactions:
        doc.paragraph(
            "A schedule that moves every cell alike leaves the verdicts alone, which compare cells. Per pair of "
            "controlled cells, their difference with the dedicated runs and with the branches, and *branches − "
            "dedicated*: the paired t-test of (Y − X) branch − (Y − X) dedicated over the seeds all four cells "
            "share (an interval that holds 0: no interaction of schedule and strategy detectable)."
        )
        doc.table(*interaction_table(pairs))
    return [c.row() for c in checks], interactions


def _null_rate(checks: list[ClaimCheck], reps: int = 10_000) -> dict[str, Any] | None:
    """The verdict rule's simulated false-verdict rate for this report's family (its number of tests, the fewest
    seeds of a tested pair), each rate with its Monte-Carlo Wilson interval; None when nothing was tested."""
    tested = [x for c in checks for _, x in c.tests if x.test is not None]
    if not tested:
        return None
    tests, seeds = max(x.family for x in tested), min(min(x.a.n, x.b.n) for x in tested)
    rates = {d: false_verdict_rate(d, seeds, True, tests, reps) for d in ("normal", "binomial")}
    intervals = {f"{d}_ci": list(wilson(round(r * reps), reps)) for d, r in rates.items()}
    return {"tests": tests, "seeds": seeds, "reps": reps, **rates, **intervals}


def _rate(null: dict[str, Any], dist: str) -> str:
    low, high = null[f"{dist}_ci"]
    return f"{null[dist]:.2%} [{low:.2%}, {high:.2%}]"


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
    claims, null = _claims(doc, atlas, cells)
    doc.heading("The survey's questions")
    summaries = {}
    for s in summarise_all(cells):
        q = s.question
        summaries[q.key] = {"note": s.note, "pairs": [{"pair": p.head, "lines": p.lines(),
                            "tests": [_test_json(c) for c in p.comparisons]} for p in s.pairs]}  # fmt: skip
        doc.heading(f"{q.title}: {q.a_label} vs {q.b_label}", 3)
        if s.note:
            doc.paragraph(s.note)
        for p in s.pairs:
            doc.paragraph(p.head)
            doc.bullets(p.lines())
    doc.paragraph(RULE)
    _figures(doc, cells, results, figures)
    und, gen = _first_metric(cells, "understanding"), _first_metric(cells, "generation")
    analogues = [VIDEO_ANALOGUE.get(m) for m in (und, gen) if m]  # a video column beside image ones
    scaled = [m for m in (und, gen, *analogues, "motion_accuracy", "task_loss", "caption_nll") if m]
    scaled = [m for m in dict.fromkeys(scaled) if m in ("task_loss", "caption_nll") or any(c.stat(m) for c in cells)]
    scaling = scaling_section(doc, results, scaled, figures)
    controls, interactions = _schedule_controls(doc, cells, [m for m in (und, gen, "task_loss") if m])
    steps = _steps(doc, cells, figures)
    compositional = _compositional(doc, results)
    further = _further(doc, results)
    ledger = _ledger(doc, results)
    doc.heading("Every run")
    doc.table(RUN_HEADER, [_run_row(r) for r in results])
    doc.paragraph(
        "Metrics from `unimm eval`'s harness (docs/eval.md; a video run's from `eval/video.py`, where *(clips)* "
        "marks the caption exact match in *caption acc* and the per-frame prompt accuracy in *prompt acc*, the "
        "analogues a check or question on those metrics reads on clips); *FID [95 % CI]*: the run's FID with its "
        "bootstrap interval over resamples of its generated and real images (sampling noise of one evaluation, not the "
        "seed-to-seed spread the verdicts test); *final train loss* is the text loss plus the weighted "
        "image loss (router terms left out), mean of the last 5 logged steps; *total FLOPs* is the ledger's total; "
        "*vs budget* compares what the main budget paid (or, for a wall-time budget, the training loop's seconds) "
        "with the budget; peak memory is the "
        "resident set of the training and of the evaluation process (GPU allocator peak on a GPU); *train wall s* "
        "counts finished training sessions (an interrupted one is not counted). Per-run reports: "
        "`runs/<run>/eval/eval.md`."
    )
    sweep = sweep_summary(out, [r.folder for r in results if r.status == "done"])
    if sweep is not None:
        doc.heading("The sweep itself")
        doc.paragraph(summary_text(sweep))
    atomic_write_text(out / "report.md", doc.markdown(out))
    atomic_write_text(out / "report.html", doc.html())
    data = {
        "atlas": atlas.name,
        "runs": [{"name": r.run.name, "status": r.status, "values": r.values, "info": r.info} for r in results],
        "ledger": {
            "regime": atlas.budget.regime,
            "side_flops": atlas.budget.side_flops,
            "shared_tokenizer": atlas.budget.shared_tokenizer,
            "runs": ledger,
        },  # fmt: skip
        "claims": claims,
        "null_rate": null,
        "questions": summaries,
        "quality_per_step": steps,
        "compositional": compositional,
        "further": further,
    }
    if scaling is not None:  # only with a ladder of 4 budgets or more (a one-budget atlas's report is unchanged)
        data["scaling"] = scaling
    if controls:
        data["schedule_controls"] = controls
    if interactions:
        data["schedule_interactions"] = interactions
    if sweep is not None:
        data["sweep"] = sweep
    atomic_write_text(out / "report.json", json.dumps(data, indent=2))
    return out / "report.md"
