"""Two cells on one metric over training seeds: the difference, a t-test of it, and which side is better, if any.

The rule, the same everywhere. d = mean(B) − mean(A). When both cells ran the same seeds (at least two), the
runs are paired by seed (same data order, same noise) and the per-seed differences d_s = B_s − A_s get a
paired t-test: t = mean(d_s) / (sd(d_s)/√n) on n − 1 degrees of freedom. Otherwise, when each side has at least
two seeds, Welch's t-test: SE = √(s_A²/n_A + s_B²/n_B) on the Welch–Satterthwaite degrees of freedom. The
p-value is two-sided, from the t distribution; the 95 % confidence interval of d is d ± t₀.₉₇₅(df)·SE, the
interval that matches the test. With no spread at all (SE = 0, ties of a discrete metric) the test is undefined
and p is taken as 1. The tests of one report section form a family: their p-values are Holm-adjusted
(``holm``) and a side is *better* only when the adjusted p is below ``ALPHA`` (0.05) **and** |d| is above a floor
below which a difference does not matter (0.005 for rates in [0, 1] such as accuracies, else 1 % of the larger
mean). With one seed on a side there is no test: *not enough seeds*, and nothing is claimed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from scipy.special import stdtr, stdtrit

from unimm.atlas.metrics import HIGHER_IS_BETTER, RATES
from unimm.atlas.results import Stat

ALPHA = 0.05


@dataclass(frozen=True)
class TTest:
    """A two-sided t-test of d = mean(B) − mean(A): ``paired`` over shared seeds or ``welch`` over each side's."""

    kind: str  # "paired" | "welch"
    diff: float
    se: float
    df: float

    @property
    def t(self) -> float:
        if self.se > 0:
            return self.diff / self.se
        return 0.0 if self.diff == 0 else math.copysign(math.inf, self.diff)

    @property
    def p(self) -> float:
        """Two-sided p-value from the t distribution; 1 when there is no spread (the test is undefined)."""
        if self.se <= 0:
            return 1.0
        return float(min(1.0, 2 * stdtr(self.df, -abs(self.t))))

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """The t-interval of the difference: d ± t quantile(df) · SE."""
        half = float(stdtrit(self.df, 0.5 + level / 2)) * self.se
        return self.diff - half, self.diff + half


def paired_differences(a: Stat, b: Stat) -> list[float] | None:
    """Per-seed differences B − A (in seed order) when both sides ran the same two or more seeds (each once)."""
    if a.n < 2 or len(set(a.seeds)) != a.n or sorted(a.seeds) != sorted(b.seeds):
        return None
    va, vb = dict(zip(a.seeds, a.values, strict=True)), dict(zip(b.seeds, b.values, strict=True))
    return [vb[s] - va[s] for s in sorted(va)]


def _no_rounding(se: float, a: Stat, b: Stat) -> float:
    """``se``, or 0 when it is float rounding of equal values (ties of a discrete metric such as 0.6 − 0.5 and
    0.8 − 0.7): a spread of 1e-9 of the values' scale is no spread."""
    scale = max(1.0, *(abs(v) for v in a.values + b.values))
    return se if se > 1e-9 * scale else 0.0


def paired_test(a: Stat, b: Stat, d: Sequence[float]) -> TTest:
    n = len(d)
    return TTest("paired", statistics.fmean(d), _no_rounding(statistics.stdev(d) / math.sqrt(n), a, b), n - 1)


def welch_test(a: Stat, b: Stat) -> TTest:
    va, vb = a.sd**2 / a.n, b.sd**2 / b.n
    se = _no_rounding(math.sqrt(va + vb), a, b)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1)) if se > 0 else float(a.n + b.n - 2)
    return TTest("welch", b.mean - a.mean, se, df)


def t_test(a: Stat, b: Stat) -> TTest | None:
    """Paired when both sides ran the same seeds, else Welch's; None with fewer than two seeds on a side."""
    d = paired_differences(a, b)
    if d is not None:
        return paired_test(a, b, d)
    if min(a.n, b.n) < 2:
        return None
    return welch_test(a, b)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): the k-th smallest p times (m − k + 1), made
    non-decreasing in that order and capped at 1. Rejecting adjusted p < alpha controls the family-wise error."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [1.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


@dataclass
class Comparison:
    """Cells A and B on one metric; ``p_adjusted`` / ``family`` are set by ``adjust`` (a family of one: raw p)."""

    metric: str
    a: Stat
    b: Stat
    p_adjusted: float | None = None
    family: int = 1
    confounds: str | None = None  # settings the two cells also differ in, besides the axis: no verdict then

    @property
    def higher(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]

    @property
    def diff(self) -> float:
        return self.b.mean - self.a.mean

    @cached_property
    def test(self) -> TTest | None:
        return t_test(self.a, self.b)

    @property
    def p(self) -> float | None:
        """The p-value the decision uses: Holm-adjusted in its family, raw in a family of one."""
        if self.test is None:
            return None
        return self.test.p if self.p_adjusted is None else self.p_adjusted

    @property
    def floor(self) -> float:
        """The smallest difference that counts at all."""
        return 0.005 if self.metric in RATES else 0.01 * max(abs(self.a.mean), abs(self.b.mean))

    @property
    def outcome(self) -> str:
        """``b`` / ``a``: that side better (significant, above the floor); ``small``: significant but below the
        floor; ``within``: not significant; ``few-seeds``: no test; ``confounded``: the cells also differ in
        ``confounds``, so no side is called better whatever the test says."""
        if self.confounds is not None:
            return "confounded"
        if self.test is None:
            return "few-seeds"
        if self.p >= ALPHA:
            return "within"
        if abs(self.diff) <= self.floor:
            return "small"
        return "b" if (self.diff > 0) == self.higher else "a"

    def numbers(self) -> str:
        """``difference +0.075, 95 % CI [−0.243, +0.393]`` (no interval without a test)."""
        text = f"difference {self.diff:+.3f}"
        if self.test is None:
            return text
        lo, hi = self.test.ci()
        return text + f", 95 % CI [{lo:+.3f}, {hi:+.3f}]"

    def test_text(self) -> str:
        """The test, its statistic, degrees of freedom and p-values (raw, Holm)."""
        t = self.test
        if t is None:
            return ""
        if t.kind == "paired":
            d = ", ".join(f"{x:+.3f}" for x in paired_differences(self.a, self.b))
            how = f"paired t-test over seeds {', '.join(map(str, sorted(self.a.seeds)))}, per-seed differences {d}"
        else:
            how = "Welch's t-test"
        if t.se <= 0:
            return f"{how}: no spread over seeds, the t-test is undefined (p taken as 1)"
        stats = f"{how}: t = {t.t:.2f} on {t.df:.3g} df, p {_p(t.p)}"
        if self.p_adjusted is not None and self.family > 1:
            stats += f", Holm-adjusted p {_p(self.p_adjusted)} over {self.family} tests"
        return stats

    def sentence(self, a_name: str, b_name: str) -> str:
        """One line: both sides' mean ± sd, the difference with its 95 % CI, the test and what follows."""
        direction = "higher" if self.higher else "lower"
        head = (f"`{self.metric}` ({direction} is better): {a_name} {self.a.text()} vs {b_name} {self.b.text()}, "
                f"{self.numbers()}")  # fmt: skip
        o = self.outcome
        if o == "confounded":
            test = f"; {self.test_text()}" if self.test is not None else ""
            return head + f"{test}; the cells also differ in {self.confounds}: no verdict (not a matched pair)."
        if o == "few-seeds":
            return head + "; not enough seeds for a t-test (one seed on a side): no difference is claimed."
        tail = {
            "within": "not significant, no difference shown.",
            "small": f"significant, but |d| is below the {self.floor:.3g} that matters: no difference claimed.",
            "b": f"significant, {b_name} is better on this metric.",
            "a": f"significant, {a_name} is better on this metric.",
        }[o]
        return head + f"; {self.test_text()}; {tail}"


def adjust(family: Sequence[Comparison]) -> None:
    """Holm-adjust the p-values of the comparisons that have a test and no confounds, as one family (sets
    ``p_adjusted``); a confounded comparison is not a test of anything, so it does not enlarge the family."""
    tested = [c for c in family if c.test is not None and c.confounds is None]
    for c, p in zip(tested, holm([c.test.p for c in tested]), strict=True):
        c.p_adjusted, c.family = p, len(tested)
