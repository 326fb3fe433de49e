"""Paired difference of two interleaved evaluations on the same tasks (docs/editing.md, sixteenth round).

    python docs/recipes/paired_interleaved.py RUN_A/eval-interleaved/eval.json RUN_B/eval-interleaved/eval.json

Prints each run's rate and the mean per-task difference A - B in points, with its 95 % bootstrap interval over the
tasks (2,000 resamples, seed 0), for: each slot's accuracy (slot k of every task that has one), task accuracy
(every slot right) and consistency (shapes tasks). The interval covers the tasks, not training seeds.
"""

import json
import random
import sys


def outcomes(path: str) -> list[dict[str, int]]:
    """Per task: slot k right (``slot1``, ``slot2``, ...), ``task`` (all slots right), ``consistency`` (0/1, or
    absent where it does not apply)."""
    rows = []
    for r in json.load(open(path))["interleaved"]["results"]:
        row = {f"slot{k + 1}": int(v) for k, v in enumerate(r["slots"])}
        row["task"] = int(all(r["slots"]))
        if r.get("consistency") is not None:
            row["consistency"] = int(r["consistency"])
        rows.append(row)
    return rows


def interval(diffs: list[int], reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return means[int(0.025 * reps)], means[int(0.975 * reps) - 1]


def main(a_path: str, b_path: str) -> None:
    a, b = outcomes(a_path), outcomes(b_path)
    if len(a) != len(b):
        raise SystemExit(f"{a_path} and {b_path} did not score the same tasks ({len(a)} vs {len(b)})")
    keys = [k for k in a[0] if all(k in x for x in a + b)]
    print("| measure | A | B | A - B (points) | 95 % interval over tasks |")
    print("|---|---:|---:|---:|---|")
    for key in keys:
        diffs = [x[key] - y[key] for x, y in zip(a, b, strict=True)]
        lo, hi = interval(diffs)
        rate_a, rate_b = (100 * sum(x[key] for x in rows) / len(rows) for rows in (a, b))
        print(
            f"| {key} | {rate_a:.1f} % | {rate_b:.1f} % | {100 * sum(diffs) / len(diffs):+.1f} | "
            f"[{100 * lo:+.1f}, {100 * hi:+.1f}] |"
        )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
