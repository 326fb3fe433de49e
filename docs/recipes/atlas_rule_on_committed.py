"""Today's verdict rule (paired t-test over seeds, Holm across the checks) applied to the committed quick atlas.

The committed report (docs/atlas/quick/report.json) was written with the older screening rule; this re-judges its
three literature checks from the per-run values it stores, with unimm.atlas.comparison as it is now, and prints
the markdown rows README.md quotes. No training: ``python docs/recipes/atlas_rule_on_committed.py``.
"""

import json
from collections import defaultdict
from pathlib import Path

from unimm.atlas.comparison import holm, t_test
from unimm.atlas.metrics import HIGHER_IS_BETTER
from unimm.atlas.results import Stat

REPORT = Path(__file__).resolve().parents[2] / "docs" / "atlas" / "quick" / "report.json"
# (check, cell A, cell B, metric, the side the paper says is better): as configs/atlas/quick.toml declares them
CHECKS = [
    ("Transfusion", "chameleon.dense", "transfusion.dense", "prompt_accuracy", "b"),
    ("MoT", "transfusion.dense", "transfusion.mot", "task_loss", "b"),
    ("Janus", "chameleon.dense", "janus.dense", "caption_accuracy", "b"),
]


def cells(report: dict) -> dict[str, dict[str, Stat]]:
    """cell ("strategy.layers") -> metric -> Stat over its seeds."""
    values: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for run in report["runs"]:
        strategy, layers, *_, seed = run["name"].split(".")
        for metric, v in run["values"].items():
            if isinstance(v, (int, float)):
                values[f"{strategy}.{layers}"][metric][int(seed.removeprefix("s"))] = float(v)
    return {c: {m: Stat([v[s] for s in sorted(v)], sorted(v)) for m, v in ms.items()} for c, ms in values.items()}


def main() -> None:
    by_cell = cells(json.loads(REPORT.read_text()))
    tests = [t_test(by_cell[a][m], by_cell[b][m]) for _, a, b, m, _ in CHECKS]
    adjusted = holm([t.p if t is not None else 1.0 for t in tests])
    print("| check | metric | difference B − A | 95 % CI | p | Holm p | verdict |\n|---|---|---:|---|---:|---:|---|")
    for (name, a, b, metric, better), t, p_holm in zip(CHECKS, tests, adjusted, strict=True):
        if t is None:
            print(f"| {name} | {metric} | – | – | – | – | not enough seeds |")
            continue
        low, high = t.ci()
        b_better = (t.diff > 0) == HIGHER_IS_BETTER[metric]
        verdict = "inconclusive" if p_holm >= 0.05 else ("agrees" if b_better == (better == "b") else "disagrees")
        print(f"| {name} ({b} vs {a}) | {metric} | {t.diff:+.4f} | [{low:+.3f}, {high:+.3f}] | {t.p:.3f} | "
              f"{p_holm:.3f} | {verdict} |")


if __name__ == "__main__":
    main()
