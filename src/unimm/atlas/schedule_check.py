"""Do cooldown branches stand in for dedicated runs? A strategy's ladder runs against its control's.

A control entry (``control_of`` in the atlas TOML) trains the same cell, budget and seeds as runs of their own
with the preset's schedule (warmup + cosine). Per metric, the branch's mean minus the dedicated run's mean gets
the atlas's paired t-test over seeds and its 95 % interval (``comparison.py``). *Within seed noise* compares
|d| with the seed-to-seed standard deviation of the two cells (pooled); *equivalent* asks more: the whole
interval inside ± that standard deviation (two one-sided tests at 2.5 % each).

A schedule can move every cell and still leave the atlas's verdicts alone, which compare cells: for two
controlled cells X and Y, ``ScheduleInteraction`` tests whether the difference Y − X under the branches equals
the difference under the dedicated runs (per seed: (Y − X) branch − (Y − X) dedicated, paired over the seeds
all four cells share).

    python -m unimm.atlas.schedule_check docs/atlas/medium/report.json   # both tables from a report's runs
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from unimm.atlas.comparison import Comparison
from unimm.atlas.results import Cell, Stat


@dataclass
class ScheduleCheck:
    dedicated: Cell  # the control's runs (their own, cosine)
    branch: Cell  # the ladder's runs at the same budget
    metric: str

    @property
    def comparison(self) -> Comparison:
        return Comparison(self.metric, self.dedicated.stat(self.metric), self.branch.stat(self.metric))

    @property
    def noise(self) -> float | None:
        """The pooled seed-to-seed standard deviation of the two cells (None without two seeds on each)."""
        a, b = self.dedicated.stat(self.metric), self.branch.stat(self.metric)
        if a.n < 2 or b.n < 2:
            return None
        return math.sqrt(((a.n - 1) * a.sd**2 + (b.n - 1) * b.sd**2) / (a.n + b.n - 2))

    def row(self) -> dict[str, Any]:
        c, noise = self.comparison, self.noise
        ci = c.test.ci() if c.test is not None else None
        return {
            "metric": self.metric,
            "budget": self.branch.budget,
            "dedicated": self.dedicated.key,
            "branch": self.branch.key,
            "dedicated_mean": c.a.mean,
            "branch_mean": c.b.mean,
            "seeds": sorted(set(c.a.seeds) & set(c.b.seeds)),
            "diff": c.diff,
            "ci": list(ci) if ci else None,
            "p": c.test.p if c.test is not None else None,
            "seed_sd": noise,
            "within_noise": None if noise is None else abs(c.diff) <= noise,
            "equivalent": None if noise is None or ci is None else -noise <= ci[0] and ci[1] <= noise,
        }


def schedule_checks(cells: list[Cell], metrics: list[str]) -> list[ScheduleCheck]:
    """Every control cell against its strategy's ladder cell of the same layers, size, budget and data."""
    out = []
    for ded in cells:
        of = ded.first.run.control_of
        if of is None:
            continue
        for br in cells:
            r, d = br.first.run, ded.first.run
            same = (r.strategy, r.layers, r.size, r.budget, r.dataset) == (of, d.layers, d.size, d.budget, d.dataset)
            if same and r.in_ladder:
                out += [ScheduleCheck(ded, br, m) for m in metrics if ded.stat(m) and br.stat(m)]
    return out


def _fmt(v: float | None, spec: str = "+.4f") -> str:
    return "–" if v is None else f"{v:{spec}}"


def table(checks: list[ScheduleCheck]) -> tuple[list[str], list[list[str]]]:
    rows = []
    for c in checks:
        x = c.row()
        ci = f"[{x['ci'][0]:+.4f}, {x['ci'][1]:+.4f}]" if x["ci"] else "–"
        yes = {True: "yes", False: "**no**", None: "–"}
        rows.append([f"`{x['branch']}` @ {x['budget']}", f"`{x['metric']}`", f"{x['dedicated_mean']:.4f}",
                     f"{x['branch_mean']:.4f}", _fmt(x["diff"]), ci, _fmt(x["p"], ".3f"), _fmt(x["seed_sd"], ".4f"),
                     yes[x["within_noise"]], yes[x["equivalent"]]])  # fmt: skip
    header = ["cell", "metric", "dedicated (cosine)", "cooldown branch", "branch − dedicated", "95 % CI", "p",
              "seed s.d.", "within seed noise", "equivalent (CI within ± s.d.)"]  # fmt: skip
    return header, rows


@dataclass
class ScheduleInteraction:
    """Two schedule checks on one metric and budget: does the difference between their cells depend on the
    schedule? ``first`` and ``second`` are X and Y of the module's docstring."""

    first: ScheduleCheck
    second: ScheduleCheck

    def effects(self) -> tuple[Stat, Stat] | None:
        """Y − X per shared seed under the dedicated runs, and under the branches (None below two seeds)."""
        stats = [c.stat(self.first.metric) for c in (self.first.dedicated, self.first.branch,
                                                     self.second.dedicated, self.second.branch)]  # fmt: skip
        per = [dict(zip(st.seeds, st.values, strict=True)) for st in stats]
        seeds = sorted(set.intersection(*(set(v) for v in per)))
        if len(seeds) < 2:
            return None
        xd, xb, yd, yb = per
        return (Stat([yd[s] - xd[s] for s in seeds], seeds), Stat([yb[s] - xb[s] for s in seeds], seeds))

    def row(self) -> dict[str, Any] | None:
        effects = self.effects()
        if effects is None:
            return None
        dedicated, branch = effects
        c = Comparison(self.first.metric, dedicated, branch)
        ci = c.test.ci() if c.test is not None else None
        return {
            "metric": self.first.metric,
            "budget": self.first.branch.budget,
            "x": self.first.branch.key,
            "y": self.second.branch.key,
            "seeds": dedicated.seeds,
            "effect_dedicated": dedicated.mean,
            "effect_branch": branch.mean,
            "same_sign": (dedicated.mean > 0) == (branch.mean > 0),
            "interaction": c.diff,
            "ci": list(ci) if ci else None,
            "p": c.test.p if c.test is not None else None,
        }


def schedule_interactions(checks: list[ScheduleCheck]) -> list[ScheduleInteraction]:
    """Every two checks of one metric, budget and dataset, in the order of ``checks``."""
    out = []
    for i, x in enumerate(checks):
        for y in checks[i + 1 :]:
            rx, ry = x.branch.first.run, y.branch.first.run
            if x.metric == y.metric and x.branch.budget == y.branch.budget and rx.dataset == ry.dataset:
                out.append(ScheduleInteraction(x, y))
    return out


def interaction_table(interactions: list[ScheduleInteraction]) -> tuple[list[str], list[list[str]]]:
    rows = []
    for it in interactions:
        x = it.row()
        if x is None:
            continue
        ci = f"[{x['ci'][0]:+.4f}, {x['ci'][1]:+.4f}]" if x["ci"] else "–"
        rows.append([f"`{x['y']}` − `{x['x']}` @ {x['budget']}", f"`{x['metric']}`", _fmt(x["effect_dedicated"]),
                     _fmt(x["effect_branch"]), "yes" if x["same_sign"] else "**no**", _fmt(x["interaction"]), ci,
                     _fmt(x["p"], ".3f")])  # fmt: skip
    header = ["difference", "metric", "with dedicated (cosine) runs", "with cooldown branches", "same sign",
              "branches − dedicated", "95 % CI", "p"]  # fmt: skip
    return header, rows


def _from_report(report: dict[str, Any], datasets: dict[str, str]) -> list[ScheduleCheck]:
    """The schedule checks of a report.json, rebuilt from its per-run values (run names: cell.budget.sSEED);
    ``datasets``: each run's data.path (from the plan.json beside it)."""
    from types import SimpleNamespace

    by_cell: dict[tuple[str, str], list] = {}
    for r in report["runs"]:
        if r["status"] != "done":
            continue
        strategy, layers, size, budget, seed = r["name"].split(".")
        key = f"{strategy}/{layers}/{size}"
        run = SimpleNamespace(seed=int(seed.removeprefix("s")), dataset=datasets.get(r["name"]))
        by_cell.setdefault((key, budget), []).append(SimpleNamespace(run=run, values=r["values"]))
    checks = []
    for c in report.get("schedule_controls", []):
        ded = Cell(c["dedicated"], c["budget"], by_cell[(c["dedicated"], c["budget"])])
        br = Cell(c["branch"], c["budget"], by_cell[(c["branch"], c["budget"])])
        checks.append(ScheduleCheck(ded, br, c["metric"]))
    return checks


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json
    from pathlib import Path

    from unimm.document import markdown_table

    p = argparse.ArgumentParser(description="The schedule checks and their interactions from an atlas report.json")
    p.add_argument("report", type=Path)
    args = p.parse_args(argv)
    plan = args.report.with_name("plan.json")
    if not plan.is_file():
        raise SystemExit(f"{plan}: not found (the atlas writes it beside report.json)")
    datasets = {}
    for run in json.loads(plan.read_text()):
        paths = [o.split("=", 1)[1] for o in run["overrides"] if o.startswith("data.path=")]
        datasets[run["name"]] = json.loads(paths[-1]) if paths else None
    checks = _from_report(json.loads(args.report.read_text()), datasets)
    if not checks:
        raise SystemExit(f"{args.report}: no schedule controls")
    print("\n".join(markdown_table(*table(checks))))
    print()
    print("\n".join(markdown_table(*interaction_table(schedule_interactions(checks)))))


if __name__ == "__main__":
    main()
