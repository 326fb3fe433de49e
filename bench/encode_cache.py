"""What ``train.encode_cache_mib`` saves: the editing recipe's training steps (docs/editing.md: quick preset on
shape edits, the 8-channel VAE at hidden 64, oneDNN linears) with and without the cache, alternated in one process.

A small edit set is generated (``--edits``, default 480 scenes: about 370 training edits, 740 distinct images) so
that over ``--steps`` steps of batch 64 the share of encodes reused is close to the real run's (4,000 steps over
14,723 training edits: 94 % of 512,000 encodes repeat an earlier one, its ``ledger.json``). Each run trains from
scratch (the VAE fitted for ``--fit-steps``: the encoder's cost does not depend on its weights); the figure is the
training loop's tokens/s at its last step (``metrics.jsonl``, measured from the first step, so it includes the
misses of the first steps). Results go to ``bench/results/encode_cache.json`` and ``.md``. Run
``python bench/encode_cache.py`` (``--threads``, ``--steps``, ``--reps``; ``--quick`` for a smoke run).
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from unimm.config import load_config
from unimm.data.edits import make_edits, write_edits
from unimm.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RECIPE = [  # docs/editing.md's recipe, its codec fitted briefly here instead of loaded (codec.tokenizer)
    "model.max_seq_len=144", "data.shift=0", "codec.channels=8", "codec.hidden=64", "codec.downsample=4",
    "train.val_every=0", "train.tensorboard=false", "train.save_every=100000",
]  # fmt: skip


def run(args: argparse.Namespace, work: Path) -> dict:
    data = work / "edits"
    write_edits(data, make_edits(args.edits, seed=0))
    sets = [
        *RECIPE,
        f'data.path="{data}"',
        f"train.steps={args.steps}",
        f"train.threads={args.threads}",
        f"codec.steps={args.fit_steps}",
        f'train.matmul="{args.matmul}"',
        *([f"train.batch_size={args.batch_size}"] if args.batch_size else []),
    ]
    rates: dict[str, list[float]] = {"off": [], "on": []}
    reused: list[float] = []
    for rep in range(args.reps):
        for mode in ("off", "on"):
            cfg = load_config(
                ROOT / "configs" / "quick.toml", [*sets, f"train.encode_cache_mib={args.mib * (mode == 'on')}"]
            )
            out = work / f"{mode}{rep}"
            t0 = time.perf_counter()
            train(cfg, out, progress=False)
            last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
            rates[mode].append(last["tokens_per_s"])
            ledger = json.loads((out / "ledger.json").read_text())["frozen_encoders"]
            if mode == "on":
                reused.append(1 - ledger["distinct_inputs"] / ledger["inputs"])
            print(f"rep {rep} cache {mode}: {last['tokens_per_s']:.0f} tokens/s ({time.perf_counter() - t0:.0f} s)")
    off, on = (statistics.median(rates[m]) for m in ("off", "on"))
    return {
        "recipe": "configs/quick.toml " + " ".join(RECIPE), "edits": args.edits, "steps": args.steps,
        "batch_size": cfg.train.batch_size, "threads": args.threads, "matmul": args.matmul, "reps": args.reps,
        "tokens_per_s": rates, "median_off": off, "median_on": on, "speedup": round(on / off, 3),
        "encodes_reused": round(statistics.mean(reused), 4),
        "torch": torch.__version__, "cpu": cpu_model(), "load_average": os.getloadavg()[0],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip


def markdown(r: dict) -> str:
    return "\n".join(
        [
            f"# The encode cache: editing recipe, batch {r['batch_size']}, {r['threads']} threads, {r['matmul']}",
            "",
            f"{r['cpu']}, torch {r['torch']}, load average at start {r['load_average']:.2f}, {r['date']}. "
            f"{r['steps']} steps per run on {r['edits']} generated scenes' edits, cache off and on alternated "
            f"{r['reps']} times; {100 * r['encodes_reused']:.1f} % of the cached runs' encodes reused.",
            "",
            "| train.encode_cache_mib | training tokens/s (median) | runs |",
            "|---|---:|---|",
            f"| 0 (off) | {r['median_off']:.0f} | {', '.join(f'{v:.0f}' for v in r['tokens_per_s']['off'])} |",
            f"| on | {r['median_on']:.0f} | {', '.join(f'{v:.0f}' for v in r['tokens_per_s']['on'])} |",
            "",
            f"Cache on / off: **{r['speedup']:.2f}x** the training throughput.",
            "",
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--reps", type=int, default=2, help="off / on pairs, alternated; medians reported")
    ap.add_argument("--edits", type=int, default=480, help="shapes scenes to make edits of (make_edits)")
    ap.add_argument("--fit-steps", type=int, default=20, help="VAE fitting steps before training")
    ap.add_argument("--mib", type=int, default=1024, help="train.encode_cache_mib of the cached runs")
    ap.add_argument("--matmul", default="onednn", choices=["blas", "onednn"])
    ap.add_argument("--batch-size", type=int, default=None, help="default: the preset's (64)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 steps of batch 8, one pair")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.reps, args.batch_size, args.edits, args.fit_steps = 4, 1, 8, 60, 2
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        result = run(args, Path(work))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encode_cache.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (args.out / "encode_cache.md").write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
