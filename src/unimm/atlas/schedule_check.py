"""Do cooldown branches stand in for dedicated runs? A strategy's ladder runs against its control's.

A control entry (``control_of`` in the atlas TOML) trains the same cell, budget and seeds as runs of their own
with the preset's schedule (warmup + cosine). Per metric, the branch's mean minus the dedicated run's mean gets
the atlas's paired t-test over seeds and its 95 % interval (``comparison.py``). *Within seed noise* compares
|d| with the seed-to-seed standard deviation of the two cells (pooled); *equivalent* asks more: the whole
interval inside ± that standard deviation (two one-sided tests at 2.5 % each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from unimm.atlas.comparison import Comparison
from unimm.atlas.results import Cell


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
