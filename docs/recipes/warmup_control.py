"""The medium atlas's cooldown branches against cosine runs with and without the ladder's warm-up (issue 17).

    python docs/recipes/warmup_control.py docs/atlas/medium/report.json docs/atlas/warmup/report.json

For transfusion/dense/tiny at 6e12 FLOPs, per metric: each cell's mean ± s.d. over seeds 0-2, then paired
differences over the seeds (the atlas's t-test and 95 % interval, ``unimm.atlas.comparison``): the branch against
the cosine run with the ladder's 12 warm-up steps and with the preset's 100, the warm-up's own effect, and the
re-run of the committed control against the committed one (same settings on later code: 0 if it reproduces).
"""

import json
import sys

from unimm.atlas.comparison import Comparison
from unimm.atlas.results import Stat

METRICS = ("caption_accuracy", "prompt_accuracy", "task_loss", "caption_nll")
CELLS = {  # label -> (report, run name prefix)
    "branch (medium)": (0, "transfusion.dense.tiny.6e12flops"),
    "cosine w100 (medium)": (0, "transfusion-cosine.dense.tiny.6e12flops"),
    "cosine w100 (again)": (1, "transfusion-cosine.dense.tiny.6e12flops"),
    "cosine w12": (1, "transfusion-cosine-w12.dense.tiny.6e12flops"),
}
PAIRS = [  # (A, B): B - A
    ("cosine w12", "branch (medium)"),
    ("cosine w100 (again)", "branch (medium)"),
    ("cosine w100 (again)", "cosine w12"),
    ("cosine w100 (medium)", "cosine w100 (again)"),
]


def stat(report: dict, prefix: str, metric: str) -> Stat:
    runs = [r for r in report["runs"] if r["name"].rsplit(".", 1)[0] == prefix and r["status"] == "done"]
    runs = [r for r in runs if metric in r["values"]]
    return Stat([r["values"][metric] for r in runs], [int(r["name"].rsplit(".s", 1)[1]) for r in runs])


def main(medium: str, warmup: str) -> None:
    reports = [json.load(open(medium)), json.load(open(warmup))]
    for metric in METRICS:
        stats = {label: stat(reports[i], prefix, metric) for label, (i, prefix) in CELLS.items()}
        print(f"## {metric}")
        for label, s in stats.items():
            print(f"- {label}: {s.text(4)}")
        for a, b in PAIRS:
            c = Comparison(metric, stats[a], stats[b])
            if c.test is None:
                print(f"- {b} − {a}: {c.diff:+.4f} (no test)")
                continue
            lo, hi = c.test.ci()
            print(f"- {b} − {a}: {c.diff:+.4f} [{lo:+.4f}, {hi:+.4f}], p = {c.test.p:.3f}")
        print()


if __name__ == "__main__":
    main(*sys.argv[1:3])
