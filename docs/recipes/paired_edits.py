"""Paired difference of two editing evaluations on the same test edits (docs/editing.md, fourth round).

    python docs/recipes/paired_edits.py RUN_A/eval/eval.json RUN_B/eval/eval.json
    python docs/recipes/paired_edits.py keep RUN/eval/eval.json docs/recipes/edit-outcomes/RECORD.json

Prints, for edit accuracy, preservation and both, the mean per-edit difference A - B in points and its 95 %
bootstrap interval over the edits (2,000 resamples, seed 0). The interval covers the test edits, not training seeds.
``keep`` writes a run's per-edit outcomes alone (kind, edit, preservation: a few kB) in the same layout, so that a
later session pairs a new run with a committed one without its run directory (docs/recipes/edit-outcomes/).
"""

import json
import random
import sys


def main(a_path: str, b_path: str, reps: int = 2000, seed: int = 0) -> None:
    a = json.load(open(a_path))["editing"]["results"]
    b = json.load(open(b_path))["editing"]["results"]
    if len(a) != len(b) or any(x["kind"] != y["kind"] for x, y in zip(a, b, strict=True)):
        raise SystemExit("the two evaluations did not score the same test edits")
    rng = random.Random(seed)
    for key in ("edit", "preservation", "both"):
        def hit(r: dict, key: str = key) -> int:
            return int(r["edit"] and r["preservation"]) if key == "both" else int(r[key])

        d = [hit(x) - hit(y) for x, y in zip(a, b, strict=True)]
        n = len(d)
        boot = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
        lo, hi = boot[int(0.025 * reps)], boot[int(0.975 * reps) - 1]
        print(f"{key}: {100 * sum(d) / n:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}] over {n} edits")


def keep(eval_path: str, out_path: str) -> None:
    results = json.load(open(eval_path))["editing"]["results"]
    kept = [{k: r[k] for k in ("kind", "edit", "preservation")} for r in results]
    with open(out_path, "w") as handle:
        json.dump({"editing": {"results": kept}}, handle, separators=(",", ":"))
        handle.write("\n")


if __name__ == "__main__":
    if sys.argv[1] == "keep":
        keep(*sys.argv[2:4])
    else:
        main(*sys.argv[1:3])
