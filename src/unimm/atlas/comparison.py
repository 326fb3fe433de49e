"""Two cells on one metric over training seeds: the difference, the seed spread, and which side is better, if any.

The rule, the same everywhere. d = mean(B) - mean(A). When both cells ran the same seeds (at least two), the
runs are paired by seed (same data order, same noise): the per-seed differences d_s = B_s - A_s give
SE = sd(d_s) / sqrt(n). Otherwise SE = sqrt(s_A²/n_A + s_B²/n_B), s the standard deviation over seeds. A side
is *better beyond the seed spread* only when |d| > 2·SE **and** it is better in every seed pair (paired) or
every seed of it beats every seed of the other side (unpaired) **and** |d| is above a floor below which a
difference does not matter (0.005 for rates in [0, 1] such as accuracies, else 1 % of the larger mean). With
fewer than two seeds on a side there is no spread and no difference is claimed. With 2-3 seeds this is a
screening rule, not a significance test.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from unimm.atlas.results import HIGHER_IS_BETTER, Stat

RATES = {"caption_accuracy", "rank_accuracy", "vqa_accuracy", "exact_match", "caption_bleu_4", "prompt_accuracy",
         "precision", "recall"}  # fmt: skip


@dataclass
class Comparison:
    metric: str
    a: Stat
    b: Stat

    @property
    def higher(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]

    @property
    def diff(self) -> float:
        return self.b.mean - self.a.mean

    @property
    def paired(self) -> list[float] | None:
        """Per-seed differences B - A when both sides ran the same two or more seeds."""
        if self.a.n < 2 or sorted(self.a.seeds) != sorted(self.b.seeds) or len(set(self.a.seeds)) != self.a.n:
            return None
        a = dict(zip(self.a.seeds, self.a.values, strict=True))
        return [v - a[s] for s, v in zip(self.b.seeds, self.b.values, strict=True)]

    @property
    def spread(self) -> float:
        """2·SE of the difference (0 when a side has one seed)."""
        d = self.paired
        if d is not None:
            return 2 * statistics.stdev(d) / math.sqrt(len(d))
        if min(self.a.n, self.b.n) < 2:
            return 0.0
        return 2 * math.sqrt(self.a.sd**2 / self.a.n + self.b.sd**2 / self.b.n)

    @property
    def floor(self) -> float:
        """The smallest difference that counts at all."""
        return 0.005 if self.metric in RATES else 0.01 * max(abs(self.a.mean), abs(self.b.mean))

    @property
    def outcome(self) -> str:
        """``b`` / ``a``: that side better beyond the seed spread; ``within``; ``one-seed``."""
        if min(self.a.n, self.b.n) < 2:
            return "one-seed"
        sign = 1 if self.higher else -1
        gain = sign * self.diff  # > 0: B better
        tol = 1e-9 * max(1.0, abs(self.a.mean), abs(self.b.mean))  # equal up to float rounding is equal
        if abs(gain) <= self.floor:
            return "within"
        d = self.paired
        if d is not None:
            b_always, a_always = all(sign * x > tol for x in d), all(sign * x < -tol for x in d)
        else:
            b_always = min(sign * v for v in self.b.values) > max(sign * v for v in self.a.values) + tol
            a_always = min(sign * v for v in self.a.values) > max(sign * v for v in self.b.values) + tol
        if gain > self.spread and b_always:
            return "b"
        if -gain > self.spread and a_always:
            return "a"
        return "within"

    def sentence(self, a_name: str, b_name: str) -> str:
        """One line with both sides' mean ± sd, the difference, the spread and what follows from them."""
        direction = "higher" if self.higher else "lower"
        head = (f"`{self.metric}` ({direction} is better): {a_name} {self.a.text()} vs {b_name} {self.b.text()}, "
                f"difference {self.diff:+.3f}")  # fmt: skip
        d = self.paired
        how = f"paired by seed: {', '.join(f'{x:+.3f}' for x in d)}; " if d is not None else ""
        o = self.outcome
        if o == "one-seed":
            return head + "; one seed on a side, so no seed spread to judge it by: no difference is claimed."
        if o == "within":
            return head + f" ({how}2·SE = {self.spread:.3f}): within the seed spread, no difference shown."
        winner = b_name if o == "b" else a_name
        return head + f" ({how}2·SE = {self.spread:.3f}): beyond the seed spread, {winner} is better on this metric."
