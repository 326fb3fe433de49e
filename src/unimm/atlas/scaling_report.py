"""The report's scaling section: each curve's fitted law, its held-out check, and what two or more curves of the
same data and regime say together (parity ratios, crossovers, the compute-optimal choice). Shown only when a
curve has ``MIN_BUDGETS`` budgets or more, so that its largest budget can be held out of a 3-parameter fit."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from unimm.atlas.config import AXES
from unimm.atlas.findings import matched_pairs
from unimm.atlas.metrics import VIDEO_ANALOGUE
from unimm.atlas.plots import plot_scaling
from unimm.atlas.results import RunResult, group_cells
from unimm.atlas.scaling import (
    BootstrapFit,
    Crossover,
    Curve,
    Holdout,
    Optimal,
    Parity,
    budget_levels,
    compute_optimal,
    crossover,
    curves_from_results,
    headline,
    holdout_check,
    parity_ratio,
)
from unimm.document import Document

MIN_BUDGETS = 4
Table = tuple[list[str], list[list[str]]]
NOTE = (
    "Each curve is fitted with the saturating law m(C) = m∞ + A·(C/C0)^(−α) (minus for a metric where higher is "
    "better; C0 the geometric mean of the budgets; `unimm/atlas/scaling.py`) on every run, C being the compute the "
    "budget counted (the ledger's *main budget paid*). Intervals are {level:.0%} bootstrap intervals over the "
    "training seeds (every budget of a seed resampled together; the residuals with one seed), widened for few "
    "seeds. *Held out*: the law fitted without the largest budget, predicting it. *Parity*: the compute B needs "
    "to reach A's value at A's largest budget, as a multiple of A's. Everything beyond the largest budget is "
    "extrapolation."
)


def _ci(value: float, interval: tuple[float, float], spec: str = ".3g") -> str:
    return f"{value:{spec}} [{interval[0]:{spec}}, {interval[1]:{spec}}]"


def fits_table(curves: list[Curve], fits: dict[str, BootstrapFit]) -> Table:
    """One row per fitted curve: budgets, runs, m∞, A and α with intervals, the RMS residual, the bootstrap."""
    rows = []
    for c in curves:
        f = fits[c.label]
        rows.append([f"`{c.label}`", str(c.budgets), str(len(c.points)), _ci(f.fit.m_inf, f.interval("m_inf"), ".4g"),
                     _ci(f.fit.A, f.interval("A")), _ci(f.fit.alpha, f.interval("alpha")), f"{f.fit.residual:.3g}",
                     f"{f.method} ({len(f.seeds)} seed{'s' * (len(f.seeds) > 1)}, {f.reps} draws)"])  # fmt: skip
    return ["curve", "budgets", "runs", "m∞", "A", "α", "RMS residual", "bootstrap"], rows


def holdout_table(checks: dict[str, Holdout]) -> Table:
    """The predictions that are checked: the largest budget predicted from the others, and measured."""
    rows = [[f"`{k}`", f"{h.compute:.3g}", _ci(h.prediction, h.interval, ".4g"), f"{h.measured:.4g} ({h.seeds})",
             f"{h.error:+.1%}", "yes" if h.inside else "**no**"] for k, h in checks.items()]  # fmt: skip
    return ["curve", "held-out budget", "predicted [interval]", "measured (runs)", "error", "inside"], rows


def parity_table(parities: dict[tuple[str, str], Parity]) -> Table:
    rows = [[f"`{a}`", f"`{b}`", f"{p.compute:.3g}", f"{p.value:.4g}", p.text(), f"{p.reached:.0%}"]
            for (a, b), p in parities.items()]  # fmt: skip
    return ["A", "B", "A's budget", "A's value", "B's compute / A's [interval]", "draws where B reaches it"], rows


def crossover_table(crossings: dict[tuple[str, str], Crossover]) -> Table:
    rows = [[f"`{a}`", f"`{b}`", f"{x.c_range[0]:.3g} – {x.c_range[1]:.3g}", x.text(),
             f"`{a if x.better_at_low == 'a' else b}`"] for (a, b), x in crossings.items()]  # fmt: skip
    return ["A", "B", "range", "crossover [interval]", "better at the low end"], rows


def optimal_table(choices: list[Optimal]) -> Table:
    rows = [[f"{o.compute:.3g}", f"`{o.best}`", f"{o.value:.4g}", f"{o.probability:.0%}"] for o in choices]
    return ["budget", "best (predicted)", "its value", "share of draws where it is best"], rows


# The survey's questions as the README asks them, each on the metric that answers it (`findings.QUESTIONS` and the
# fusion check): side A's kinds, side B's, on one strategy axis.
HEADLINES = (
    ("autoregressive vs diffusion images", "writer.kind", ("ar-codes",), ("latent",), "prompt_accuracy"),
    ("dense vs mixture-of-experts / MoT", "layers.kind", ("dense",), ("moe", "modality-moe", "mot"), "task_loss"),
    ("shared vs decoupled image encoder", "reader.kind", ("shared",), ("vit",), "caption_accuracy"),
    ("early vs late fusion", "reader.kind", ("shared",), ("vit",), "caption_nll"),
)
AXES_COMPARED = ("writer.kind", "layers.kind", "reader.kind", "text.kind")


def matched_curve_pairs(results: list[RunResult], axis: str, a_kinds=None, b_kinds=None) -> list[tuple[str, str]]:
    """(A, B) curve labels of cells that form a matched pair on ``axis`` (no confounds) at some budget: the pairs
    a curve comparison means something for. Without kinds, every ordered pair of kinds on the axis."""
    kinds = AXES[axis].kinds()
    out: dict[tuple[str, str], None] = {}
    for pair in matched_pairs(axis, a_kinds or kinds, b_kinds or kinds, group_cells(results)):
        if pair.a.key == pair.b.key or pair.confounds() is not None:
            continue
        ra, rb = pair.a.first.run, pair.b.first.run
        key_a, key_b = f"{ra.cell} ({ra.dataset}, {ra.regime})", f"{rb.cell} ({rb.dataset}, {rb.regime})"
        if a_kinds is None and (key_b, key_a) in out:
            continue
        out[key_a, key_b] = None
    return list(out)


def headline_table(results: list[RunResult], fits: dict[str, dict[str, BootstrapFit]]) -> tuple[Table, list]:
    """One row per survey question and matched pair of curves: where B is better, A is, they cross, or no
    difference is detectable up to the largest budget."""
    rows, data = [], []
    for title, axis, a_kinds, b_kinds, declared in HEADLINES:
        for a, b in matched_curve_pairs(results, axis, a_kinds, b_kinds):
            for metric in (declared, VIDEO_ANALOGUE.get(declared)):  # clips: the image metric's video analogue
                fa, fb = fits.get(metric, {}).get(a), fits.get(metric, {}).get(b)
                if fa is not None and fb is not None:
                    break
            if fa is None or fb is None:
                continue
            c_range = (max(min(fa.compute), min(fb.compute)), min(max(fa.compute), max(fb.compute)))
            h = headline(fa, fb, c_range)
            rows.append([title, f"`{metric}`", f"`{a}`", f"`{b}`", h.text("A", "B")])
            data.append({"question": title, "metric": metric, "a": a, "b": b, "verdict": h.verdict,
                         "statement": h.text(a, b), "b_better": h.b_better, "a_better": h.a_better,
                         "at_top": h.at_top, "crossings": h.crossover.crossings})  # fmt: skip
    return (["question", "metric", "A", "B", "answer over the measured budgets"], rows), data


def _family(curves: list[Curve]) -> dict[tuple[str, str, str], list[Curve]]:
    """Curves that can be compared: the same data, regime and compute unit."""
    out: dict[tuple[str, str, str], list[Curve]] = {}
    for c in curves:
        out.setdefault((c.dataset, c.regime, c.unit), []).append(c)
    return out


def scaling_section(doc: Document, results: list[RunResult], metrics: list[str], folder: Path,
                    reps: int = 1000) -> dict[str, Any] | None:  # fmt: skip
    """The section "Scaling", one part per metric with a curve of ``MIN_BUDGETS`` budgets or more; None (and
    nothing written) when there is none."""
    parts = {m: [c for c in curves_from_results(results, m) if c.budgets >= MIN_BUDGETS] for m in metrics}
    parts = {m: cs for m, cs in parts.items() if cs}
    if not parts:
        return None
    doc.heading("Scaling: quality vs compute")
    doc.paragraph(NOTE.format(level=0.9))
    data: dict[str, Any] = {}
    all_fits = {m: {c.label: c.fit(reps=reps) for c in cs} for m, cs in parts.items()}
    table, answers = headline_table(results, all_fits)
    if answers:
        doc.heading("The survey's questions, answered by the curves", 3)
        doc.paragraph(
            "For each question, every matched pair of curves (cells that differ only on the question's axis, same "
            "data, size and regime) on the question's metric: the better-oriented difference B − A of the fitted "
            "laws, with its paired bootstrap interval, over the budgets both measured. *B better at C1–C2*: the "
            "interval excludes 0 there; *no difference detectable up to C*: it never does; a crossover when each "
            "side is better somewhere. Beyond the largest budget nothing is claimed."
        )
        doc.table(*table)
    data["headlines"] = answers
    matched = {(a, b) for axis in AXES_COMPARED for a, b in matched_curve_pairs(results, axis)}
    for metric, curves in parts.items():
        doc.heading(metric, 3)
        fits = all_fits[metric]
        path = plot_scaling(curves, fits, folder / f"scaling_{metric}.png")
        if path:
            doc.image(path, f"{metric} vs compute")
        doc.table(*fits_table(curves, fits))
        checks = {c.label: holdout_check(c.points, c.higher_is_better, m_bounds=c.m_bounds, reps=reps)
                  for c in curves}  # fmt: skip
        doc.table(*holdout_table(checks))
        parities, crossings, optimal = {}, {}, []
        for group in _family(curves).values():  # parity and crossovers of matched pairs only
            for a, b in itertools.permutations(group, 2):
                if (a.label, b.label) in matched or (b.label, a.label) in matched:
                    parities[a.label, b.label] = parity_ratio(fits[a.label], fits[b.label], max(fits[a.label].compute))
            for a, b in itertools.combinations(group, 2):
                if (a.label, b.label) not in matched and (b.label, a.label) not in matched:
                    continue
                low = min(min(fits[a.label].compute), min(fits[b.label].compute))
                high = max(max(fits[a.label].compute), max(fits[b.label].compute))
                crossings[a.label, b.label] = crossover(fits[a.label], fits[b.label], (low, high))
            if len(group) > 1:
                budgets = budget_levels([p[0] for c in group for p in c.points])
                optimal += compute_optimal({c.label: fits[c.label] for c in group}, budgets)
        if parities:
            doc.table(*parity_table(parities))
            doc.table(*crossover_table(crossings))
        if optimal:
            doc.table(*optimal_table(optimal))
        data[metric] = {
            "fits": {k: {"m_inf": f.fit.m_inf, "A": f.fit.A, "alpha": f.fit.alpha, "c_ref": f.fit.c_ref,
                         "residual": f.fit.residual, "method": f.method,
                         "intervals": {n: f.interval(n) for n in ("m_inf", "A", "alpha")}} for k, f in fits.items()},
            "holdout": {k: {"compute": h.compute, "prediction": h.prediction, "interval": h.interval,
                            "measured": h.measured, "error": h.error, "inside": h.inside} for k, h in checks.items()},
            "parity": [{"a": a, "b": b, "ratio": p.ratio, "interval": p.interval, "reached": p.reached}
                       for (a, b), p in parities.items()],
            "crossovers": [{"a": a, "b": b, "range": x.c_range, "crossings": x.crossings, "interval": x.interval,
                            "share": x.share} for (a, b), x in crossings.items()],
            "optimal": [{"compute": o.compute, "best": o.best, "probability": o.probability} for o in optimal],
        }  # fmt: skip
    return data
