"""The verdict rule under the null, simulated: how often a report with identical strategies claims a difference.

Two strategies with the same true mean are compared over ``n`` seeds, three checks per report (as in
``configs/atlas/*.toml``), on a continuous metric (a final training loss) and on a binomial accuracy over 200
evaluation samples; paired seeds share a seed effect, as the atlas's runs of one seed do. The false-verdict rate is
the share of reports with any *agrees* / *disagrees*, decided exactly as ``findings.check_claims`` decides them;
the screening rule the atlas used before (|d| > 2·SE over seeds, the same sign in every seed) is simulated beside
it. ``tests/atlas/test_verdict_rule.py`` uses these draws; the rates docs/atlas.md quotes come from

    python -m unimm.atlas.null_rates --reps 20000
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np

from unimm.atlas.comparison import Comparison, adjust
from unimm.atlas.findings import verdict
from unimm.atlas.results import Stat

CHECKS = 3  # checks in one report's family
FALSE = ("agrees", "disagrees")


def draw(rng: np.random.Generator, dist: str, n: int, paired: bool, shift: float = 0.0) -> Comparison:
    """One comparison of two strategies over ``n`` seeds; B's true mean is A's plus ``shift``."""
    spread = 0.3 if dist == "normal" else 0.03
    seed_effect = rng.normal(0, spread, n)

    def side(delta: float) -> list[float]:
        u = seed_effect if paired else rng.normal(0, spread, n)
        if dist == "normal":
            return (3.0 + delta + u + rng.normal(0, 0.3, n)).tolist()
        return (rng.binomial(200, np.clip(0.4 + delta + u, 0, 1)) / 200).tolist()

    metric = "task_loss" if dist == "normal" else "caption_accuracy"
    seeds_b = list(range(n)) if paired else list(range(n, 2 * n))
    return Comparison(metric, Stat(side(0.0), list(range(n))), Stat(side(shift), seeds_b))


def verdicts(family: list[Comparison], expects_b: bool = True) -> list[str]:
    """Each check's verdict after Holm over the family."""
    adjust(family)
    return [verdict(expects_b, [c])[0] for c in family]


def screening_fires(c: Comparison) -> bool:
    """The replaced rule: |d| > 2·SE (paired SE over shared seeds, else unpaired) and B beats A in every seed
    pair (or every seed of one side beats every seed of the other), in either direction."""
    a, b = c.a.values, c.b.values
    if min(len(a), len(b)) < 2:
        return False
    if c.test is not None and c.test.kind == "paired":
        d = [y - x for x, y in zip(a, b, strict=True)]
        se = statistics.stdev(d) / math.sqrt(len(d))
        same_sign = all(x > 0 for x in d) or all(x < 0 for x in d)
    else:
        se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
        same_sign = min(b) > max(a) or min(a) > max(b)
    return abs(c.diff) > 2 * se and same_sign


def rates(dist: str, reps: int, seed: int = 2024) -> dict[tuple[bool, int], tuple[float, float]]:
    """(paired, seeds) -> (false-verdict rate of today's rule, of the screening rule), over ``reps`` reports."""
    rng, out = np.random.default_rng(seed), {}
    for paired in (True, False):
        for n in (2, 3, 5):
            out[(paired, n)] = _simulate(rng, dist, n, paired, CHECKS, reps)
    return out


def _simulate(rng: np.random.Generator, dist: str, n: int, paired: bool, checks: int, reps: int) -> tuple[float, float]:
    """(false-verdict rate of today's rule, of the screening rule) over ``reps`` reports of ``checks`` tests."""
    today = screening = 0
    for _ in range(reps):
        family = [draw(rng, dist, n, paired) for _ in range(checks)]
        screening += any(screening_fires(c) for c in family)
        today += any(v in FALSE for v in verdicts(family))
    return today / reps, screening / reps


def false_verdict_rate(dist: str, n: int, paired: bool, checks: int, reps: int = 2000, seed: int = 2024) -> float:
    """Today's rule: the share of simulated reports of ``checks`` tests between identical strategies over ``n``
    seeds with any *agrees* / *disagrees* (what a report of that shape claims under the null)."""
    return _simulate(np.random.default_rng(seed), dist, n, paired, checks, reps)[0]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=20_000, help="simulated reports per setting")
    args = p.parse_args(argv)
    print("| metric | seeds | paired | today's rule | screening rule |\n|---|---:|---|---:|---:|")
    for dist in ("normal", "binomial"):
        for (paired, n), (today, screening) in rates(dist, args.reps).items():
            print(f"| {dist} | {n} | {'yes' if paired else 'no'} | {today:.1%} | {screening:.1%} |")


if __name__ == "__main__":
    main()
