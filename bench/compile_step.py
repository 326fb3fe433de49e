"""A run's training step eager against ``train.compile``, on the run's own config and data, in one process.

``train_step.py`` times a fixed transfusion layout on MNIST; this times whatever a config and its overrides train
(for example docs/editing.md's edit recipe), as ``unimm train`` would build it: two models from the same seed, one
eager (its ``train.matmul`` setting as given) and one with its backbone blocks ``torch.compile``d (BLAS linears,
as ``train.compile`` requires), stepped in alternating rounds of ``--steps`` steps (forward + backward + clip +
AdamW, batches packed inside the step as in ``train/loop.py``), so that a machine's drift hits both alike. The
ratio is the median of the per-round ratios. Before timing, both models' losses on the first batch are compared.

    python bench/compile_step.py configs/quick.toml --set data.path=... [--set KEY=VALUE ...] --threads 2 \
        --out bench/results/xeon/compile_step_edits

Results: ``OUT/compile_step.json`` and ``OUT/compile_step.md``.
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from unimm.config import load_config
from unimm.models import UnifiedModel
from unimm.nn.onednn_linear import onednn_linears
from unimm.optim import build_optimizer
from unimm.train.loop import build_tokenizer, make_batch, resolve_data
from unimm.train.stream import ExampleStream

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ siblings, however this file is run
from machine import cpu_model  # noqa: E402
from train_step import contention_note  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def build(cfg, tok, compile_backend: str | None):
    """A model and its optimizer as ``unimm train`` builds them, its blocks compiled with ``compile_backend``."""
    torch.manual_seed(cfg.train.seed)
    model = UnifiedModel(cfg, tok)
    model.train()
    if compile_backend is not None:
        model.backbone.compile_blocks(compile_backend)
    t = cfg.train
    return model, build_optimizer(model, t.lr, t.weight_decay, t.betas)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path, nargs="?", default=None, help="a preset (none: the defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps", type=int, default=5, help="steps per round and arm")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per arm first (the compile is in them)")
    p.add_argument("--compile", default="inductor", help="torch.compile backend (aot_eager: no C++ compiler)")
    p.add_argument("--out", type=Path, default=RESULTS / "compile_step")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    eager_cfg = load_config(args.config, [*args.overrides, "train.tensorboard=false"])
    onednn = eager_cfg.train.matmul == "onednn"
    compiled_cfg = load_config(args.config, [*args.overrides, "train.tensorboard=false", 'train.matmul="blas"'])
    data, templates = resolve_data(eager_cfg)
    resolve_data(compiled_cfg)  # sets the image size and channels from the dataset, as for the eager config
    tok = build_tokenizer(eager_cfg, data, templates)
    stream = ExampleStream(data, templates, eager_cfg.data, eager_cfg.train.batch_size, eager_cfg.train.seed)
    drawn = [stream.batch(k) for k in range(4)]
    arms = {
        "eager": (*build(eager_cfg, tok, None), onednn),
        "compiled": (*build(compiled_cfg, tok, args.compile), False),
    }

    def step(arm, k: int) -> float:
        model, opt, dnn = arm
        batch = make_batch(model, *drawn[k % len(drawn)])
        with onednn_linears(dnn):
            loss, _ = model(batch, torch.Generator().manual_seed(k))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), eager_cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    first = {}
    warm = {}
    for name, arm in arms.items():
        t0 = time.perf_counter()
        first[name] = step(arm, 0)
        for k in range(1, args.warmup):
            step(arm, k)
        warm[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, arm in arms.items():
            t0 = time.perf_counter()
            for k in range(args.steps):
                step(arm, k)
            times[name].append((time.perf_counter() - t0) / args.steps)
    ratios = [e / c for e, c in zip(times["eager"], times["compiled"], strict=True)]
    median = {name: statistics.median(v) for name, v in times.items()}
    result = {
        "benchmark": "compile_step",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "loadavg_start": load,
        "contention": contention_note(load[0], torch.get_num_threads()),
        "config": str(args.config) if args.config else "defaults",
        "overrides": args.overrides,
        "eager_matmul": eager_cfg.train.matmul,
        "compile_backend": args.compile,
        "tokens_per_step": int(make_batch(arms["eager"][0], *drawn[0]).tokens.numel()),
        "first_loss": first,
        "warmup_s": warm,
        "step_s": times,
        "median_step_s": median,
        "speedup_median": statistics.median(ratios),
        "speedup_10_90": [sorted(ratios)[int(0.1 * (len(ratios) - 1))], sorted(ratios)[int(0.9 * (len(ratios) - 1))]],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compile_step.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "compile_step.md").write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(r: dict) -> str:
    sets = " ".join(f"`--set {o}`" for o in r["overrides"]) or "no overrides"
    lines = [
        f"# Training step, eager against `train.compile`: {r['config']}",
        "",
        f"{r['cpu']}, {r['threads']} torch threads, torch {r['torch']}, load average at start "
        f"{r['loadavg_start'][0]:.2f}, {r['date']}; {sets}.",
        "",
        *([f"**Contention:** {r['contention']}.", ""] if r["contention"] else []),
        "| arm | step s (median of rounds) | steps / s | warm-up s (first steps; the compile) | loss, first batch |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (("eager", f'eager, `train.matmul = "{r["eager_matmul"]}"`'), ("compiled", "compiled blocks")):
        s = r["median_step_s"][name]
        lines.append(f"| {label} | {s:.3f} | {1 / s:.2f} | {r['warmup_s'][name]:.1f} | {r['first_loss'][name]:.6f} |")
    lo, hi = r["speedup_10_90"]
    lines += [
        "",
        f"Compiled blocks run the step **{r['speedup_median']:.2f}x** as fast (median of {len(r['step_s']['eager'])} "
        f"alternating rounds' ratios; 10-90 % {lo:.2f}-{hi:.2f}x), {r['tokens_per_step']:,} padded tokens per step, "
        f"backend {r['compile_backend']}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
