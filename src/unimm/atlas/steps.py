"""Quality per inference step (UniDisc's claim, Swerdlow et al. 2025, arXiv 2503.20853: masked discrete diffusion
reaches a given quality with fewer forward passes than autoregressive decoding, which needs one per image token).

Each cell's prompt accuracy against the backbone passes per generated image, from the evaluation's
``generation.step_sweep`` (``[eval] step_sweep``), with Wilson 95 % intervals since the sweep's n is small; and, for
each masked-codes cell, the fewest passes at which it reaches an ar-codes cell's accuracy at the AR cell's own pass
count. Descriptive only: AR has no matching step count to pair with, so nothing here is a test in the Holm family.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from unimm.atlas.results import Cell
from unimm.eval.intervals import wilson


@dataclass(frozen=True)
class StepPoint:
    """One step count of a cell: passes and accuracy are means over its seeds, hits and n pooled over them."""

    steps: int | None  # None: the writer's own count (ar-codes)
    passes: float
    accuracy: float
    hits: int
    n: int
    s_per_image: float
    seeds: int

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.hits, self.n)

    def text(self) -> str:
        lo, hi = self.interval
        return f"{self.accuracy:.3f} [{lo:.3f}, {hi:.3f}]"


def step_points(cell: Cell) -> list[StepPoint]:
    """The cell's sweep points (``info["step_sweep"]`` of each seed's run) by step count, ordered by passes."""
    by_steps: dict[int | None, list[dict]] = {}
    for r in cell.results:
        for p in r.info.get("step_sweep") or []:
            by_steps.setdefault(p["steps"], []).append(p)
    points = [
        StepPoint(
            steps=steps,
            passes=statistics.fmean(p["passes"] for p in ps),
            accuracy=statistics.fmean(p["prompt_accuracy"] for p in ps),
            hits=sum(round(p["prompt_accuracy"] * p["n"]) for p in ps),
            n=sum(p["n"] for p in ps),
            s_per_image=statistics.fmean(p["s_per_image"] for p in ps),
            seeds=len(ps),
        )
        for steps, ps in by_steps.items()
    ]
    return sorted(points, key=lambda p: (p.passes, p.steps or 0))


def writer_kind(cell: Cell) -> str:
    return cell.first.run.config["writer"]["kind"]


def _group(cell: Cell) -> tuple:
    """Cells compared with each other: the same data, budget and regime."""
    run = cell.first.run
    return getattr(run, "dataset", None), cell.budget, getattr(run, "regime", None)


@dataclass(frozen=True)
class Reach:
    """Where a masked-codes cell first reaches an ar-codes cell's accuracy at the AR cell's own pass count."""

    masked: Cell
    ar: Cell
    target: StepPoint  # the AR cell's point
    points: list[StepPoint]  # the masked cell's, by passes

    @property
    def at(self) -> StepPoint | None:
        """The masked point with the fewest passes whose mean accuracy is at least the AR cell's; None: not reached."""
        return next((p for p in self.points if p.accuracy >= self.target.accuracy), None)

    def sentence(self) -> str:
        head = (f"`{self.masked.key}` vs `{self.ar.key}` ({self.masked.budget}): the AR cell's prompt accuracy at its "
                f"{self.target.passes:g} passes per image is {self.target.text()}")  # fmt: skip
        at = self.at
        if at is None:
            best = max(self.points, key=lambda p: p.accuracy)
            return (f"{head}; the masked cell does not reach it within {self.points[-1].passes:g} passes (not "
                    f"reached; its best: {best.text()} at {best.passes:g} passes).")  # fmt: skip
        ratio = self.target.passes / at.passes
        return (f"{head}; the masked cell reaches it at {at.passes:g} passes ({at.steps} steps): {at.text()}, "
                f"{ratio:.3g}x fewer passes.")  # fmt: skip

    def as_json(self) -> dict:
        at = self.at
        return {"masked": self.masked.key, "ar": self.ar.key, "budget": self.masked.budget,
                "ar_passes": self.target.passes, "ar_accuracy": self.target.accuracy,
                "ar_ci95": list(self.target.interval), "reached_at_passes": at.passes if at else None,
                "reached_accuracy": at.accuracy if at else None,
                "reached_ci95": list(at.interval) if at else None}  # fmt: skip


def masked_vs_ar(cells: list[Cell]) -> list[Reach]:
    """Every masked-codes cell against every ar-codes cell of the same data, budget and regime that has a sweep."""
    swept = [(c, step_points(c)) for c in cells]
    swept = [(c, ps) for c, ps in swept if ps]
    out = []
    for masked, points in swept:
        if writer_kind(masked) != "masked-codes":
            continue
        for ar, ar_points in swept:
            if writer_kind(ar) == "ar-codes" and _group(ar) == _group(masked):
                native = next((p for p in ar_points if p.steps is None), ar_points[-1])
                out.append(Reach(masked, ar, native, points))
    return out
