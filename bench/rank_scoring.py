"""What ranking the class captions (``rank_accuracy``, ``caption_nll``) adds to an evaluation: the seconds
``eval.ranking.rank_classes`` takes on the held-out images a suite understands (``demo``: the whole MNIST
test split), next to the seconds captioning them takes, for a few model sizes.

The models are built as ``unimm train`` builds them, untrained (the cost does not depend on the weights).
Results go to ``bench/results/rank_scoring.json`` and ``.md``. Run ``python bench/rank_scoring.py``
(``--threads``, ``--data``; ``--quick`` for a smoke run on 20 images).
"""

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import torch

from unimm.data import load_split, templates_for
from unimm.eval.ranking import rank_classes
from unimm.eval.suites import SUITES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402
from untrained import caption_seconds, untrained_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# (name, preset, overrides, images scored: None = the suite's count)
MODELS = [
    ("tiny (quick at dim 32, depth 2)", "quick", ["model.dim=32", "model.depth=2", "model.heads=2"], None),
    ("quick (the demo's model)", "quick", [], None),
    ("unidisc (masked text, answer_len 8)", "unidisc", [], 50),
    ("unidisc, sample.score_draws = 2", "unidisc", ["sample.score_draws=2"], 50),
    ("unidisc at the quick atlas's size (dim 96, depth 3)", "unidisc", ["model.dim=96", "model.depth=3"], 50),
]


def measure(preset: str, sets: list[str], data: Path, count: int | None, batch_size: int) -> dict:
    cfg, model = untrained_model(preset, data, sets)
    test = load_split(data, "test", cfg.data.image_size, cfg.data.channels)
    n = len(test) if count is None else min(count, len(test))
    images, labels = test.images[:n], test.labels[:n]
    caption_s = caption_seconds(model, images, batch_size)
    rank = rank_classes(model, images, labels, templates_for(test), batch_size, seed=0)
    rank_s = n / rank["rank_samples_per_s"]
    texts = sum(len(templates_for(test).all_captions(c)) for c in range(templates_for(test).num_classes))
    return {"images": n, "texts": texts, "caption_s": round(caption_s, 2), "rank_s": round(rank_s, 2),
            "rank_s_per_image": round(rank_s / n, 4)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mnist")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 images each")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    suite, load = SUITES["demo"], os.getloadavg()[0]
    rows = {}
    for name, preset, sets, count in MODELS:
        rows[name] = measure(preset, sets, args.data, 20 if args.quick else count, suite.batch_size)
        print(name, rows[name], flush=True)
    result = {
        "suite": suite.name, "batch_size": suite.batch_size, "data": str(args.data), "threads": args.threads,
        "models": rows, "torch": torch.__version__, "cpu": cpu_model(), "load_average": load,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rank_scoring.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"# Ranking class captions: suite `{suite.name}` (batch {suite.batch_size}), {args.threads} thread(s)",
        "",
        f"{result['cpu']}, torch {result['torch']}, load average at start {result['load_average']:.2f}, "
        f"{result['date']}. Every image is scored against every class caption (`texts`).",
        "",
        "| model | images | texts | captioning s | ranking s | ranking s per image |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {k} | {r['images']} | {r['texts']} | {r['caption_s']} | {r['rank_s']} | {r['rank_s_per_image']} |"
          for k, r in rows.items()],
        "",
    ]  # fmt: skip
    (args.out / "rank_scoring.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
