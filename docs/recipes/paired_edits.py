"""Paired difference of two editing evaluations on the same test edits (docs/editing.md, fourth round).

    python docs/recipes/paired_edits.py RUN_A/eval/eval.json RUN_B/eval/eval.json [KIND]
    python docs/recipes/paired_edits.py seeds A_SEED0.json B_SEED0.json A_SEED1.json B_SEED1.json [...]
    python docs/recipes/paired_edits.py kinds RUN_A/eval/eval.json [RUN_B/eval/eval.json ...]
    python docs/recipes/paired_edits.py keep RUN/eval/eval.json docs/recipes/edit-outcomes/RECORD.json
    python docs/recipes/paired_edits.py reasons OUTCOMES.json [...]

Prints, for edit accuracy, preservation and both, the mean per-edit difference A - B in points and its 95 %
bootstrap interval over the edits (2,000 resamples, seed 0); with KIND (add, move, ...) over the edits of that
kind. The interval covers the test edits, not training seeds.
``seeds`` takes one (A, B) pair per training seed and prints each seed's mean difference, then their mean with a
two-level bootstrap interval (resample the seeds, then the edits within each drawn seed), which covers the spread
between training seeds as well as the test edits' (with two or three seeds, a rough one).
``kinds`` prints each evaluation's edit accuracy / preservation / both per edit kind (a markdown table).
``keep`` writes a run's per-edit outcomes alone (kind, edit, preservation: a few kB) in the same layout, so that a
later session pairs a new run with a committed one without its run directory (docs/recipes/edit-outcomes/); from an
evaluation that names failure reasons (``eval/edits.py``) it keeps them too. ``reasons`` prints, per evaluation, how
many edits failed each measure for each reason, overall and per kind.
"""

import json
import random
import sys

KEYS = ("edit", "preservation", "both")


def hit(r: dict, key: str) -> int:
    return int(r["edit"] and r["preservation"]) if key == "both" else int(r[key])


def differences(a_path: str, b_path: str, kind: str | None = None) -> dict[str, list[int]]:
    """Per test edit (of ``kind`` only, when given), A's outcome minus B's, for each of ``KEYS``."""
    a = json.load(open(a_path))["editing"]["results"]
    b = json.load(open(b_path))["editing"]["results"]
    if len(a) != len(b) or any(x["kind"] != y["kind"] for x, y in zip(a, b, strict=True)):
        raise SystemExit(f"{a_path} and {b_path} did not score the same test edits")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if kind is None or x["kind"] == kind]
    return {key: [hit(x, key) - hit(y, key) for x, y in pairs] for key in KEYS}


def interval(diffs: list[int], rng: random.Random, reps: int = 2000) -> tuple[float, float]:
    """95 % bootstrap interval of the mean of per-item differences (``reps`` resamples drawn from ``rng``)."""
    n = len(diffs)
    boot = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return boot[int(0.025 * reps)], boot[int(0.975 * reps) - 1]


def two_level_interval(per_seed: list[list[int]], rng: random.Random, reps: int = 2000) -> tuple[float, float]:
    """95 % interval of the mean over seeds of per-item differences: resample the seeds, then the items within each
    drawn seed."""
    boot = []
    for _ in range(reps):
        drawn = [per_seed[rng.randrange(len(per_seed))] for _ in per_seed]
        boot.append(sum(sum(d[rng.randrange(len(d))] for _ in d) / len(d) for d in drawn) / len(drawn))
    boot.sort()
    return boot[int(0.025 * reps)], boot[int(0.975 * reps) - 1]


def seeds(paths: list[str], reps: int = 2000, seed: int = 0) -> None:
    if len(paths) < 4 or len(paths) % 2:
        raise SystemExit("seeds needs an (A, B) pair of eval.json files per training seed, two seeds at least")
    per_seed = [differences(a, b) for a, b in zip(paths[::2], paths[1::2], strict=True)]
    rng = random.Random(seed)
    for key in KEYS:
        means = [sum(d[key]) / len(d[key]) for d in per_seed]
        lo, hi = two_level_interval([d[key] for d in per_seed], rng, reps)
        each = " / ".join(f"{100 * m:+.1f}" for m in means)
        mean = 100 * sum(means) / len(means)
        print(
            f"{key}: seeds {each}; mean {mean:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}] over {len(means)} seeds"
        )


def kinds(paths: list[str]) -> None:
    print("| evaluation | kind | edits | edit | preservation | both |\n|---|---|---:|---:|---:|---:|")
    for path in paths:
        results = json.load(open(path))["editing"]["results"]
        for kind in sorted({r["kind"] for r in results}):
            rows = [r for r in results if r["kind"] == kind]
            rates = " | ".join(f"{100 * sum(hit(r, key) for r in rows) / len(rows):.1f} %" for key in KEYS)
            print(f"| {path} | {kind} | {len(rows)} | {rates} |")


def reasons(paths: list[str]) -> None:
    print("| evaluation | kind | edits | edit failed | why (edits) | preservation failed | why (edits) |")
    print("|---|---|---:|---:|---|---:|---|")
    for path in paths:
        results = json.load(open(path))["editing"]["results"]
        if not any("edit_failure" in r for r in results):
            raise SystemExit(f"{path} was evaluated before failures were named")
        for kind in ["all", *sorted({r["kind"] for r in results})]:
            rows = [r for r in results if kind in ("all", r["kind"])]
            cells = []
            for key in ("edit", "preservation"):
                failed = [r.get(f"{key}_failure") for r in rows if not r[key]]
                counts: dict[str, int] = {}
                for why in failed:
                    counts[why] = counts.get(why, 0) + 1
                shown = ", ".join(f"{why} {n}" for why, n in sorted(counts.items(), key=lambda c: -c[1]))
                cells += [str(len(failed)), shown]
            print(f"| {path.split('/')[-1].removesuffix('.json')} | {kind} | {len(rows)} | " + " | ".join(cells) + " |")


def main(a_path: str, b_path: str, kind: str | None = None, reps: int = 2000, seed: int = 0) -> None:
    rng = random.Random(seed)
    for key, d in differences(a_path, b_path, kind).items():
        n = len(d)
        lo, hi = interval(d, rng, reps)
        print(f"{key}: {100 * sum(d) / n:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}] over {n} edits")


def keep(eval_path: str, out_path: str) -> None:
    results = json.load(open(eval_path))["editing"]["results"]
    kept = [{k: r[k] for k in ("kind", "edit", "preservation", "edit_failure", "preservation_failure") if r.get(k) is not None
             or k in ("edit", "preservation")} for r in results]  # fmt: skip
    with open(out_path, "w") as handle:
        json.dump({"editing": {"results": kept}}, handle, separators=(",", ":"))
        handle.write("\n")


if __name__ == "__main__":
    if sys.argv[1] == "keep":
        keep(*sys.argv[2:4])
    elif sys.argv[1] == "kinds":
        kinds(sys.argv[2:])
    elif sys.argv[1] == "seeds":
        seeds(sys.argv[2:])
    elif sys.argv[1] == "reasons":
        reasons(sys.argv[2:])
    else:
        main(*sys.argv[1:4])
