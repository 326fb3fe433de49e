"""What an atlas will cost before it runs (``unimm atlas CONFIG --plan``): per run, the FLOPs it computes itself
and the hours they take at a stated sustained rate.

A budget is counted FLOPs (the ledger's), so a run's training is its budget: a stable run or a dedicated run
computes all of it, a cooldown branch only its decay, ``cooldown`` x its budget (the rest is its stable run's).
In the ``pretrained`` regime every prepared part adds ``side_flops`` (counted per part the preset prepares,
which is known only once the run is built, so the plan adds it as a note, not a number). Evaluation is not
counted. Hours = FLOPs / rate: the rate is the one assumption, printed with the plan (on a GPU, e.g. 40 % of
an H100's 989 dense bf16 TFLOP/s = 396 TFLOP/s; on this CPU, what an earlier sweep achieved).
"""

from __future__ import annotations

from dataclasses import dataclass

from unimm.atlas.config import AtlasConfig
from unimm.atlas.plan import PlannedRun


@dataclass
class RunCost:
    run: PlannedRun
    role: str  # stable | branch | dedicated
    flops: float  # what this run computes itself

    def hours(self, rate_gflops: float) -> float:
        return self.flops / (rate_gflops * 1e9) / 3600


def run_costs(atlas: AtlasConfig, runs: list[PlannedRun]) -> list[RunCost]:
    """Each run's own training FLOPs (FLOP budgets only)."""
    if atlas.budget.kind != "flops":
        raise ValueError("--plan prices FLOP budgets; a wall_s budget is its own estimate (seconds per run)")
    out = []
    for r in runs:
        if r.stable is not None:
            out.append(RunCost(r, "branch", atlas.budget.cooldown * r.budget))
        else:
            out.append(RunCost(r, "stable" if r.branches else "dedicated", r.budget))
    return out


def plan_text(atlas: AtlasConfig, costs: list[RunCost], rate_gflops: float) -> str:
    """The plan as lines: one per run, then the totals and what the estimate leaves out."""
    lines = [f"{'run':<58} {'role':<9} {'budget':>9} {'computes':>10} {'hours':>8}"]
    for c in costs:
        lines.append(f"{c.run.name:<58} {c.role:<9} {c.run.budget:>9.3g} {c.flops:>10.3g} {c.hours(rate_gflops):>8.3f}")
    total = sum(c.flops for c in costs)
    dedicated = sum(c.run.budget for c in costs)
    hours = total / (rate_gflops * 1e9) / 3600
    lines.append(
        f"{len(costs)} runs: {total:.3g} training FLOPs computed ({dedicated:.3g} as runs of their own, "
        f"{1 - total / dedicated:.0%} saved by the cooldown branches); {hours:.2f} h at {rate_gflops:.4g} GFLOP/s "
        f"sustained (the assumed rate), {hours / max(1, atlas.jobs):.2f} h of wall time over {atlas.jobs} jobs if "
        "the rate is per job"
    )
    if atlas.budget.side_flops is not None:
        lines.append(f"not included: {atlas.budget.side_flops:.3g} side FLOPs per prepared part of each stable or "
                     "dedicated run (regime pretrained), the shared tokenizers, evaluation")  # fmt: skip
    else:
        lines.append("not included: evaluation (and the shared tokenizers); preparation is inside each budget")
    return "\n".join(lines)
