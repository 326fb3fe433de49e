"""What the held-out image loss (``heldout_image_loss``) adds to an evaluation: the seconds
``eval.harness.heldout_image_loss`` takes on the held-out images a suite understands (``demo``: the whole MNIST
test split), next to the seconds captioning them takes, for the demo's model and one preset per writer kind.

The models are built as ``unimm train`` builds them, untrained (the cost does not depend on the weights).
Results go to ``bench/results/heldout_loss.json`` and ``.md``. Run ``python bench/heldout_loss.py``
(``--threads``, ``--data``; ``--quick`` for a smoke run on 20 images).
"""

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from unimm.data import load_split
from unimm.eval.harness import heldout_image_loss
from unimm.eval.suites import SUITES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402
from untrained import caption_seconds, untrained_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# (name, preset, overrides, images: None = the suite's count)
MODELS = [
    ("quick (the demo's model: latent, flow)", "quick", [], None),
    ("chameleon (ar-codes)", "chameleon", [], 200),
    ("show-o (masked-codes)", "show-o", [], 200),
    ("transfusion (latent, ddpm)", "transfusion", [], 200),
    ("mar", "mar", [], 200),
    ("connector", "connector", ["reader.pretrain_steps=0"], 200),
]


def measure(preset: str, sets: list[str], data: Path, count: int | None, batch_size: int) -> dict:
    cfg, model = untrained_model(preset, data, sets)
    test = load_split(data, "test", cfg.data.image_size, cfg.data.channels, cfg.data.class_names)
    n = len(test) if count is None else min(count, len(test))
    caption_s = caption_seconds(model, test.images[:n], batch_size)
    suite = replace(SUITES["demo"], understand_n=n, batch_size=batch_size)
    t0 = time.perf_counter()
    out = heldout_image_loss(model, test, suite, seed=0)
    loss_s = time.perf_counter() - t0
    return {"images": out["heldout_image_loss_n"], "caption_s": round(caption_s, 2), "heldout_s": round(loss_s, 2),
            "heldout_s_per_image": round(loss_s / n, 4)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mnist")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 images each")
    ap.add_argument("--only", help="measure only the models whose name starts with this")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    suite, load = SUITES["demo"], os.getloadavg()[0]
    rows = {}
    for name, preset, sets, count in MODELS:
        if args.only and not name.startswith(args.only):
            continue
        rows[name] = measure(preset, sets, args.data, 20 if args.quick else count, suite.batch_size)
        print(name, rows[name], flush=True)
    result = {
        "suite": suite.name, "batch_size": suite.batch_size, "data": str(args.data), "threads": args.threads,
        "models": rows, "torch": torch.__version__, "cpu": cpu_model(), "load_average": load,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "heldout_loss.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"# Held-out image loss: suite `{suite.name}` (batch {suite.batch_size}), {args.threads} thread(s)",
        "",
        f"{result['cpu']}, torch {result['torch']}, load average at start {result['load_average']:.2f}, "
        f"{result['date']}. Untrained models at their preset's size; every image with its class prompt.",
        "",
        "| model | images | captioning s | held-out image loss s | per image s |",
        "|---|---:|---:|---:|---:|",
        *[f"| {k} | {r['images']} | {r['caption_s']} | {r['heldout_s']} | {r['heldout_s_per_image']} |"
          for k, r in rows.items()],
        "",
    ]  # fmt: skip
    (args.out / "heldout_loss.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
