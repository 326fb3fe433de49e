"""Paired difference of two interleaved evaluations on the same tasks (docs/editing.md, sixteenth round).

    python docs/recipes/paired_interleaved.py RUN_A/eval-interleaved/eval.json RUN_B/eval-interleaved/eval.json
    python docs/recipes/paired_interleaved.py seeds A_SEED0.json B_SEED0.json A_SEED1.json B_SEED1.json [...]
    python docs/recipes/paired_interleaved.py checks RUN.json [...]

Prints each run's rate and the mean per-task difference A - B in points, with its 95 % bootstrap interval over the
tasks (2,000 resamples, seed 0), for: each slot's accuracy (slot k of every task that has one), task accuracy
(every slot right), consistency (shapes tasks) and both (every slot right and the second image keeping the first's
objects). The interval covers the tasks, not training seeds. ``seeds`` takes one (A, B) pair per training seed and
prints each seed's difference and their mean with a two-level bootstrap interval (resample the seeds, then the tasks
within each drawn seed), which covers the spread between seeds too (with two seeds, a rough one). ``checks`` prints,
per evaluation (one evaluated on a commit that keeps each shapes slot's GenEval checks), each slot's pass rate per
check and the first slot's accuracy per shape it names.
"""

import json
import random
import sys

from paired_edits import interval, two_level_interval  # the same bootstrap as the editing comparisons


def outcomes(path: str) -> list[dict[str, int]]:
    """Per task: slot k right (``slot1``, ``slot2``, ...), ``task`` (all slots right), ``consistency`` and ``task and
    consistent`` (0/1, or absent where consistency does not apply)."""
    rows = []
    for r in json.load(open(path))["interleaved"]["results"]:
        row = {f"slot{k + 1}": int(v) for k, v in enumerate(r["slots"])}
        row["task"] = int(all(r["slots"]))
        if r.get("consistency") is not None:
            row["consistency"] = int(r["consistency"])
            row["task and consistent"] = int(row["task"] and r["consistency"])
        rows.append(row)
    return rows


def main(a_path: str, b_path: str) -> None:
    a, b = outcomes(a_path), outcomes(b_path)
    if len(a) != len(b):
        raise SystemExit(f"{a_path} and {b_path} did not score the same tasks ({len(a)} vs {len(b)})")
    keys = [k for k in a[0] if all(k in x for x in a + b)]
    print("| measure | A | B | A - B (points) | 95 % interval over tasks |")
    print("|---|---:|---:|---:|---|")
    for key in keys:
        diffs = [x[key] - y[key] for x, y in zip(a, b, strict=True)]
        lo, hi = interval(diffs, random.Random(0))
        rate_a, rate_b = (100 * sum(x[key] for x in rows) / len(rows) for rows in (a, b))
        print(
            f"| {key} | {rate_a:.1f} % | {rate_b:.1f} % | {100 * sum(diffs) / len(diffs):+.1f} | "
            f"[{100 * lo:+.1f}, {100 * hi:+.1f}] |"
        )


def seeds(paths: list[str], reps: int = 2000, seed: int = 0) -> None:
    if len(paths) < 4 or len(paths) % 2:
        raise SystemExit("seeds needs (A, B) pairs: A_SEED0 B_SEED0 A_SEED1 B_SEED1 ...")
    pairs = [(outcomes(a), outcomes(b)) for a, b in zip(paths[::2], paths[1::2], strict=True)]
    keys = [k for k in pairs[0][0][0] if all(k in x for a, b in pairs for x in a + b)]
    rng = random.Random(seed)
    print("| measure | per seed, A - B (points) | mean | 95 % two-level interval |")
    print("|---|---|---:|---|")
    for key in keys:
        diffs = [[x[key] - y[key] for x, y in zip(a, b, strict=True)] for a, b in pairs]
        per_seed = [sum(d) / len(d) for d in diffs]
        lo, hi = two_level_interval(diffs, rng, reps)
        shown = " / ".join(f"{100 * m:+.1f}" for m in per_seed)
        print(f"| {key} | {shown} | {100 * sum(per_seed) / len(per_seed):+.1f} | [{100 * lo:+.1f}, {100 * hi:+.1f}] |")


def checks(paths: list[str]) -> None:
    names = ("object", "count", "colour", "position", "overall")
    print("| run | slot | " + " | ".join(names) + " | slot 1 by shape named |")
    print("|---|---:|" + "---:|" * len(names) + "---|")
    for path in paths:
        results = [r for r in json.load(open(path))["interleaved"]["results"] if r.get("checks")]
        if not results:
            raise SystemExit(f"{path} has no per-slot checks (evaluated before they were kept)")
        shapes: dict[str, list[int]] = {}
        for r in results:  # "draw a red circle. Now ..." names the first slot's shape before the first full stop
            shapes.setdefault(r["prompt"].split(".")[0].split()[-1], []).append(int(r["slots"][0]))
        by_shape = ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(shapes.items()))
        for slot in range(max(len(r["slots"]) for r in results)):
            seen = [r["checks"][slot] for r in results if slot < len(r["checks"])]
            cells = []
            for name in names:
                applies = [c for c in seen if c is None or c[name] is not None]
                cells.append(f"{100 * sum(bool(c and c[name]) for c in applies) / len(applies):.1f} %" if applies else "n/a")
            shown = by_shape if slot == 0 else ""
            print(f"| {path.split('/')[-1].removesuffix('.json')} | {slot + 1} | " + " | ".join(cells) + f" | {shown} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "seeds":
        seeds(sys.argv[2:])
    elif len(sys.argv) > 2 and sys.argv[1] == "checks":
        checks(sys.argv[2:])
    elif len(sys.argv) == 3:
        main(sys.argv[1], sys.argv[2])
    else:
        raise SystemExit(__doc__)
