"""The atlas's figures (matplotlib's object API, no global state): Pareto chart, quality and loss against
FLOPs, quality per inference step, side-by-side samples, expert load, fitted scaling laws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter
from PIL import Image

from unimm.atlas.metrics import HIGHER_IS_BETTER
from unimm.atlas.results import Cell, RunResult
from unimm.atlas.scaling import BootstrapFit, Curve
from unimm.atlas.steps import step_points, writer_kind
from unimm.checkpoint import atomic_write


def _save(fig: Figure, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    return path


def _colors(keys: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {k: cmap(i % 20) for i, k in enumerate(dict.fromkeys(keys))}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher is better on both)."""
    return [i for i, (x, y) in enumerate(points)
            if not any(x2 >= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)]  # fmt: skip


def plot_pareto(cells: list[Cell], und: str, gen: str, path: Path) -> Path | None:
    """Understanding vs generation quality, one point per cell (mean, bars: seed standard deviation)."""
    rows = [(c, c.stat(und), c.stat(gen)) for c in cells]
    rows = [(c, u, g) for c, u, g in rows if u is not None and g is not None]
    if not rows:
        return None
    sign = -1 if not HIGHER_IS_BETTER[gen] else 1
    front = set(pareto_front([(u.mean, sign * g.mean) for _, u, g in rows]))
    colors = _colors([c.key for c, _, _ in rows])
    fig = Figure(figsize=(8, 6), dpi=110)
    ax = fig.subplots()
    for i, (c, u, g) in enumerate(rows):
        ax.errorbar(u.mean, g.mean, xerr=u.sd, yerr=g.sd, fmt="o", color=colors[c.key], capsize=3,
                    markersize=9 if i in front else 6, markeredgecolor="black" if i in front else "none")  # fmt: skip
        ax.annotate(c.label, (u.mean, g.mean), textcoords="offset points", xytext=(5, 4), fontsize=7)
    pts = sorted((rows[i][1].mean, rows[i][2].mean) for i in front)
    if len(pts) > 1:
        ax.plot(*zip(*pts, strict=True), color="gray", lw=1, ls="--", label="Pareto front")
        ax.legend(loc="best", fontsize=8)
    if not HIGHER_IS_BETTER[gen]:
        ax.invert_yaxis()
    ax.set(xlabel=f"understanding: {und}", ylabel=f"generation: {gen}",
           title="understanding vs generation (mean over seeds; bars: seed s.d.; ringed: Pareto front)")  # fmt: skip
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_quality_vs_flops(cells: list[Cell], metrics: list[str], path: Path) -> Path | None:
    """Each metric against the counted training FLOPs, one line per cell over its budgets."""
    by_key: dict[str, list[Cell]] = {}
    for c in cells:
        by_key.setdefault(c.key, []).append(c)
    if not any(len(v) > 1 for v in by_key.values()) or not metrics:
        return None
    colors = _colors(list(by_key))
    fig = Figure(figsize=(6 * len(metrics), 4.5), dpi=110)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for key, group in by_key.items():
            pts = [(c.info_mean("train_flops"), c.stat(metric)) for c in group]
            pts = sorted((f, s) for f, s in pts if f is not None and s is not None)
            if pts:
                ax.errorbar([f for f, _ in pts], [s.mean for _, s in pts], yerr=[s.sd for _, s in pts], marker="o",
                            capsize=3, color=colors[key], label=key)  # fmt: skip
        ax.set_xscale("log")
        ax.set(xlabel="training FLOPs (counted)", ylabel=metric, title=f"{metric} vs compute")
        ax.grid(True, which="both", alpha=0.3)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return _save(fig, path)


def plot_loss_vs_flops(results: list[RunResult], path: Path) -> Path | None:
    """Training loss (without router terms) against counted FLOPs, every finished run, a colour per cell."""
    runs = [r for r in results if r.status == "done" and len(r.curve) > 1]
    if not runs:
        return None
    colors = _colors([r.run.cell for r in runs])
    fig = Figure(figsize=(9, 5), dpi=110)
    ax = fig.subplots()
    seen = set()
    for r in runs:
        f, v = zip(*r.curve, strict=True)
        label = None if r.run.cell in seen else r.run.cell
        seen.add(r.run.cell)
        ax.plot(f, v, color=colors[r.run.cell], lw=1.2, alpha=0.85, label=label)
    ax.set(xlabel="training FLOPs (counted)", ylabel="training loss (text + weighted image, no router terms)",
           title="training loss vs compute (one line per run)")  # fmt: skip
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return _save(fig, path)


def plot_quality_per_step(cells: list[Cell], path: Path) -> Path | None:
    """Prompt accuracy against backbone passes per generated image (log x), one line per cell (means over seeds;
    bars: Wilson 95 % intervals of the pooled images); a writer with a fixed pass count is one point."""
    rows = [(c, step_points(c)) for c in cells]
    rows = [(c, ps) for c, ps in rows if ps]
    if not rows:
        return None
    colors = _colors([c.label for c, _ in rows])
    fig = Figure(figsize=(9, 5.5), dpi=110)
    ax = fig.subplots()
    for c, ps in rows:
        lo, hi = zip(*(p.interval for p in ps), strict=True)
        y = [p.accuracy for p in ps]
        err = [
            [max(0.0, a - b) for a, b in zip(y, lo, strict=True)],
            [max(0.0, b - a) for a, b in zip(y, hi, strict=True)],
        ]
        marker = {"ar-codes": "s", "masked-codes": "o"}.get(writer_kind(c), "^")
        ax.errorbar([p.passes for p in ps], y, yerr=err, marker=marker, capsize=3, color=colors[c.label],
                    label=f"{c.label} ({writer_kind(c)})")  # fmt: skip
        if writer_kind(c) == "ar-codes":  # the level a masked cell has to reach
            ax.axhline(y[-1], color=colors[c.label], ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set(xlabel="backbone forward passes per generated image (log)", ylabel="prompt accuracy",
           title="quality per inference step (mean over seeds; bars: Wilson 95 % interval)")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return _save(fig, path)


def plot_samples(cells: list[Cell], path: Path) -> Path | None:
    """One row per cell (its first seed): the first generated image of each class, the same prompts and the
    same sampling seed in every row."""
    rows = []
    for c in cells:
        folder = c.first.folder / "eval"
        if (folder / "strip.png").is_file():
            prompts = json.loads((folder / "strip.json").read_text())["prompts"]
            rows.append((c, np.asarray(Image.open(folder / "strip.png")), prompts))
    if not rows:
        return None
    prompts = rows[0][2]
    rows = [r for r in rows if r[2] == prompts]  # another dataset's prompts would not line up
    fig = Figure(figsize=(3 + 0.7 * len(prompts), 0.7 * len(rows) + 1.5), dpi=120)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (c, strip, _) in zip(axes, rows, strict=True):
        ax.imshow(strip, cmap="gray" if strip.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_yticks([])
        ax.set_xticks([])
        ax.text(-0.01, 0.5, c.label, transform=ax.transAxes, ha="right", va="center", fontsize=7)
    width = rows[-1][1].shape[1] / len(prompts)
    axes[-1].set_xticks([(i + 0.5) * width for i in range(len(prompts))], prompts, rotation=35, ha="right", fontsize=7)
    axes[0].set_title(
        "generated for the same prompts with the same sampling seed (first image of each class)", fontsize=8
    )
    return _save(fig, path)


def plot_expert_loads(results: list[RunResult], folder: Path) -> list[tuple[RunResult, Path]]:
    """``experts_<run>.png`` for the first seed of every cell whose layers route tokens."""
    from unimm.demo import expert_load, plot_expert_load

    out, seen = [], set()
    for r in results:
        if r.status != "done" or (r.run.cell, r.run.budget_name) in seen:
            continue
        load = expert_load(r.rows)
        if load is not None:
            seen.add((r.run.cell, r.run.budget_name))
            out.append((r, plot_expert_load(load, folder / f"experts_{r.run.name}.png")))
    return out


def plot_scaling(curves: list[Curve], fits: dict[str, BootstrapFit], path: Path) -> Path | None:
    """One metric against counted compute (log x): each curve's runs (a marker per seed), its fitted law (dashed
    beyond the data) and the law's bootstrap band. ``fits`` is keyed by ``Curve.label``."""
    curves = [c for c in curves if c.label in fits]
    if not curves:
        return None
    colors, markers = _colors([c.label for c in curves]), "osD^v<>ph*"
    fig = Figure(figsize=(9, 5.5), dpi=110)
    ax = fig.subplots()
    for c in curves:
        fit, color = fits[c.label], colors[c.label]
        seeds = sorted({s for _, s, _ in c.points})
        for i, s in enumerate(seeds):
            group = [p for p in c.points if p[1] == s]
            ax.scatter([p[0] for p in group], [p[2] for p in group], color=color, s=18, alpha=0.8,
                       marker=markers[i % len(markers)])  # fmt: skip
        lo, hi = min(fit.compute), max(fit.compute)
        inside, beyond = np.geomspace(lo, hi, 100), np.geomspace(hi, hi * 4, 30)
        for grid, style, label in ((inside, "-", f"{c.label} ({fit.level:.0%} band)"), (beyond, "--", None)):
            band = fit.predict_interval(grid)
            ax.fill_between(grid, *band, color=color, alpha=0.15, lw=0)
            ax.plot(grid, fit.fit.predict(grid), ls=style, color=color, label=label)
    ax.set_xscale("log")
    metric, unit = curves[0].metric, curves[0].unit
    ax.set(xlabel=f"compute ({'counted FLOPs' if unit == 'flops' else 'seconds'}, log)", ylabel=metric,
           title=f"{metric} vs compute: runs (marker per seed), fitted law, band (dashed: extrapolated)")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return _save(fig, path)
