"""What counting FLOPs costs a training step: forward + backward of the quick preset with and without
``unimm.flops.count_flops()`` (torch's FlopCounterMode) around it, alternated in one process on the same batches.

The ratio is why ``train.flops_every`` defaults to 50: with a counted step ``r`` times slower, counting every
n-th step costs ``(r - 1) / n`` of training time. Results go to ``bench/results/flop_counting.json`` and ``.md``.
Run ``python bench/flop_counting.py`` (``--threads``, ``--iters``; ``--quick`` for a smoke run).
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from unimm.config import load_config
from unimm.flops import count_flops
from unimm.models import UnifiedModel
from unimm.train.loop import build_tokenizer, make_batch, resolve_data, resolve_image_tokenizer
from unimm.train.stream import ExampleStream

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=8, help="timed steps of each kind; the median is reported")
    ap.add_argument("--quick", action="store_true", help="smoke run: batch 8, 2 iterations")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch_size, iters = (8, 2) if args.quick else (None, args.iters)
    sets = ["train.ema=0"] + ([f"train.batch_size={batch_size}"] if batch_size else [])
    cfg = load_config(ROOT / "configs" / "quick.toml", sets)
    data, templates = resolve_data(cfg)
    resolve_image_tokenizer(cfg)
    torch.manual_seed(0)
    model = UnifiedModel(cfg, build_tokenizer(cfg, data, templates)).train()  # codec unfitted: same cost
    stream = ExampleStream(data, templates, cfg.data, cfg.train.batch_size, 0)
    batches = [make_batch(model, *stream.batch(k)) for k in range(4)]

    def step(i: int, counting: bool) -> float:
        t0 = time.perf_counter()
        with count_flops() if counting else nullcontext():
            loss, _ = model(batches[i % len(batches)], torch.Generator().manual_seed(i))
            loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    step(0, False), step(0, True)  # warm-up
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(iters):
        for counting in (False, True):
            times[counting].append(step(i, counting))
    plain, counted = (statistics.median(times[c]) for c in (False, True))
    ratio = counted / plain
    result = {
        "config": "configs/quick.toml", "batch_size": cfg.train.batch_size, "threads": args.threads,
        "iters": iters, "step_ms": round(1000 * plain, 1), "counted_step_ms": round(1000 * counted, 1),
        "ratio": round(ratio, 3),
        "overhead_of_training_time": {str(n): round((ratio - 1) / n, 4) for n in (1, 10, 50)},
        "torch": torch.__version__, "cpu": cpu_model(), "load_average": os.getloadavg()[0],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flop_counting.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [f"| {n} | {100 * v:.1f} % |" for n, v in result["overhead_of_training_time"].items()]
    md = [
        f"# FLOP counting: quick preset, batch {result['batch_size']}, {args.threads} threads",
        "",
        f"{result['cpu']}, torch {result['torch']}, load average at start {result['load_average']:.2f}, "
        f"{result['date']}.",
        "",
        f"Forward + backward: {result['step_ms']} ms plain, {result['counted_step_ms']} ms inside "
        f"FlopCounterMode ({ratio:.2f}x, median of {iters}).",
        "",
        "| train.flops_every | share of training time spent counting |",
        "|---:|---:|",
        *rows,
        "",
    ]
    (args.out / "flop_counting.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
