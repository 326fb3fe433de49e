"""LoRA against a full fine-tune of a trained run: what trains, what a step costs, and whether it learns new classes.

1. **Cost**: the base run's model, once with LoRA adapters (``[train.lora]`` defaults unless ``--rank``) and once
   trained in full, in this one process on the same batch of the base run's own data: trainable parameters, the
   median time of a training step (forward, backward, grad clip, AdamW) over ``--steps-timed`` steps, modes
   alternating round by round so both see the same machine, and the peak tensor memory of the first step beyond
   the weights (activations, gradients and the AdamW state it creates: ``bench/memory.py``'s counter).
2. **Learning**: ``unimm finetune`` of the base run on another dataset (``--data``, default the coloured shapes,
   classes the MNIST demo never saw; resized and converted to the base's 28x28 grey), with LoRA and in full, the
   same steps and batch; the caption exact match on the first ``--eval-n`` test images before and after
   (``eval/harness.py``'s ``understanding``), the VQA accuracy on its single-object images and, since grey hides
   some colours (red, purple and blue differ by 16 of 255 in luminance), the share of captions whose shapes,
   count and relation are right whatever their colours.

Writes ``bench/results/NAME.json`` and ``NAME.md`` (``--name``, default ``lora``). ``python bench/lora.py --base RUN``
(the demo run directory: ``unimm demo`` or ``$UNIMM_CACHE/reports/demo-*``); ``--quick`` for a smoke run.
"""

import argparse
import datetime
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from unimm.config import LoRASection
from unimm.data import load_split, templates_for
from unimm.data.shapes import parse_caption
from unimm.eval.harness import understanding
from unimm.eval.suites import Suite
from unimm.models import UnifiedModel
from unimm.models.adapters import add_adapters
from unimm.optim import build_optimizer
from unimm.provenance import provenance
from unimm.train import train
from unimm.train.finetune import finetune_config
from unimm.train.loop import make_batch
from unimm.train.stream import ExampleStream

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402
from memory import MB, LiveTensorBytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, required=True, help="trained run directory (read only)")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "shapes", help="the fine-tune's dataset")
    p.add_argument("--work", type=Path, default=Path("/tmp/unimm-lora-bench"), help="fine-tune runs go here")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps-timed", type=int, default=10, help="timed steps per mode and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=300, help="fine-tune steps")
    p.add_argument("--lora-lr", type=float, default=3e-3)
    p.add_argument("--full-lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--max-seq-len", type=int, default=112, help="room for the shapes' longest captions")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--eval-n", type=int, default=300)
    p.add_argument(
        "--modes",
        default="lora,full",
        help="fine-tunes of part 2: lora, lora-embed (LoRA with the token "
        "embedding and output head trained in full), full",
    )
    p.add_argument("--name", default="lora", help="result files: NAME.json, NAME.md")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- 1. cost of a step


def _model(base: Path, mode: str, rank: int) -> tuple[UnifiedModel, int]:
    model = UnifiedModel.from_pretrained(base).train()
    if mode == "lora":
        add_adapters(model, LoRASection(rank=rank, alpha=2.0 * rank))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, trainable


def cost(args: argparse.Namespace) -> list[dict]:
    probe = UnifiedModel.from_pretrained(args.base)
    data = load_split(probe.cfg.data.path, "train", probe.cfg.data.image_size, probe.cfg.data.channels)
    images, examples = ExampleStream(data, templates_for(data), probe.cfg.data, args.batch, 0).batch(0)
    rows, times = {}, {"lora": [], "full": []}
    for mode in ("lora", "full"):
        model, trainable = _model(args.base, mode, args.rank)
        opt = build_optimizer(model, 1e-3, 0.05, (0.9, 0.95))
        batch = make_batch(model, images, examples)

        def step(model=model, opt=opt, batch=batch) -> float:
            loss, _ = model(batch, torch.Generator().manual_seed(0))
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss.detach())

        with LiveTensorBytes() as live:
            step()  # the first step: AdamW's state is created here
        rows[mode] = {"mode": mode, "trainable_params": trainable, "params": sum(p.numel() for p in model.parameters()),
                      "step_peak_mb": round(live.peak / MB, 1), "step": step}  # fmt: skip
    for _ in range(args.rounds):
        for mode in ("lora", "full"):
            rows[mode]["step"]()  # warm-up of this round
            for _ in range(args.steps_timed):
                t0 = time.perf_counter()
                rows[mode]["step"]()
                times[mode].append(time.perf_counter() - t0)
    out = []
    for mode in ("lora", "full"):
        row = {k: v for k, v in rows[mode].items() if k != "step"}
        row["step_s"] = round(statistics.median(times[mode]), 4)
        row["step_s_iqr"] = [round(q, 4) for q in statistics.quantiles(times[mode], n=4)[::2]]
        out.append(row)
    return out


# ----------------------------------------------------------------------------- 2. learning new classes


def shapes_right(caption: str, reference: str) -> bool:
    """The caption names the reference's shapes, count and relation, whatever the colours."""
    try:
        (got, rel), (want, rel_want) = parse_caption(caption), parse_caption(reference)
    except ValueError:  # not a shapes caption at all (the base's digits)
        return False
    return bool(want) and [s for _, s in got] == [s for _, s in want] and rel == rel_want


def evaluate(model: UnifiedModel, args: argparse.Namespace) -> dict:
    model.cfg.model.max_seq_len, model.cfg.sample.max_new_tokens = args.max_seq_len, args.max_new_tokens
    test = load_split(args.data, "test", model.cfg.data.image_size, model.cfg.data.channels)
    suite = Suite("lora-bench", understand_n=args.eval_n, per_class=0, prompts_n=0, rank=False, distribution=False,
                  heldout=False)  # fmt: skip
    u = understanding(model, test, suite)
    n = u["n"]
    captions = [model.caption(test.images[i : i + 100]) for i in range(0, n, 100)]
    captions = [c for chunk in captions for c in chunk]
    right = sum(shapes_right(c, r) for c, r in zip(captions, test.captions[:n], strict=True))
    return {
        "n": n,
        "exact_match": u["exact_match"],
        "shapes_right": right / n,
        "vqa_accuracy": u.get("vqa_accuracy"),
        "vqa_n": u.get("vqa_n"),
        "bleu4": u.get("caption_bleu4"),
        "examples": [(test.captions[i], captions[i]) for i in range(4)],
    }


def finetune(args: argparse.Namespace, mode: str) -> dict:
    out = args.work / mode
    shutil.rmtree(out, ignore_errors=True)
    sets = {"data.path": f'"{args.data}"', "model.max_seq_len": args.max_seq_len,
            "sample.max_new_tokens": args.max_new_tokens, "train.steps": args.steps, "train.batch_size": args.batch,
            "train.warmup": args.warmup, "train.lr": args.lora_lr if mode.startswith("lora") else args.full_lr,
            "train.save_every": args.steps, "train.val_every": 0, "train.flops_every": 0, "train.tensorboard": "false",
            "train.threads": args.threads}  # fmt: skip
    if mode.startswith("lora"):
        sets.update({"train.lora.rank": args.rank, "train.lora.alpha": 2.0 * args.rank})
    if mode == "lora-embed":  # the pieces of new words: their embedding rows and output rows train too
        sets["train.lora.train"] = "['backbone.embed_tokens', 'backbone.lm_head']"
    overrides = [f"{k}={v}" for k, v in sets.items()]
    t0 = time.perf_counter()
    train(finetune_config(args.base, overrides=overrides), out, progress=False)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    result = evaluate(UnifiedModel.from_pretrained(out), args)
    files = {p.name: p.stat().st_size for p in out.iterdir() if p.suffix == ".safetensors"}
    command = "unimm finetune BASE --out RUN " + " ".join(f"--set {o}" for o in overrides if "threads" not in o)
    return {"mode": mode, "wall_s": round(wall, 1), "final_text_loss": rows[-1]["text_loss"],
            "first_text_loss": rows[0]["text_loss"], "files": files, "command": command, **result}  # fmt: skip


# ----------------------------------------------------------------------------- report


def markdown(result: dict) -> str:
    a = result["args"]
    lines = [
        "# LoRA vs full fine-tune",
        "",
        f"`{result['command']}` on {result['machine']}, {a['threads']} thread(s), torch {result['torch']}, "
        f"{result['date']}. Base: `{a['base']}` ({result['base_params']:,} parameters).",
        "",
        f"## Cost of a training step (batch {a['batch']} of the base run's data, same process, same batch)",
        "",
        "| mode | trainable parameters | share | step time (median, s) | interquartile | "
        "step peak tensor memory (MB) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in result["cost"]:
        lines.append(
            f"| {r['mode']} | {r['trainable_params']:,} | {r['trainable_params'] / r['params']:.1%} | "
            f"{r['step_s']:.3f} | {r['step_s_iqr'][0]:.3f}–{r['step_s_iqr'][1]:.3f} | {r['step_peak_mb']:.1f} |"
        )
    lora, full = result["cost"]
    lines += [
        "",
        f"LoRA: {lora['step_s'] / full['step_s']:.2f}x the step time and "
        f"{lora['step_peak_mb'] / full['step_peak_mb']:.2f}x the step's peak tensor memory of the full fine-tune. "
        "The step peak counts every tensor the first step creates "
        "beyond the weights (activations kept for backward, gradients, the AdamW moments made at that step); the "
        f"weights themselves ({full['params'] * 4 / MB:.1f} MB in fp32, plus the adapters under LoRA) are not in it.",
        "",
        f"## Learning new classes: `{a['data']}` ({a['steps']} steps, batch {a['batch']})",
        "",
        f"Caption exact match on the first {a['eval_n']} test images (28x28 grey, as the base), greedy, "
        f"`sample.max_new_tokens = {a['max_new_tokens']}`, `model.max_seq_len = {a['max_seq_len']}`.",
        "",
        "| model | exact match | shapes right (colours ignored) | VQA (single objects) | text loss first → last step | "
        "fine-tune wall (s) | saved |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    before = result["before"]
    lines.append(
        f"| base (before) | {before['exact_match']:.1%} | {before['shapes_right']:.1%} | "
        f"{before['vqa_accuracy']:.1%} | — | — | — |"
    )
    for r in result["learning"]:
        saved = ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(r["files"].items()))
        lines.append(
            f"| {r['mode']} (lr {a['lora_lr'] if r['mode'].startswith('lora') else a['full_lr']}) | "
            f"{r['exact_match']:.1%} | "
            f"{r['shapes_right']:.1%} | {r['vqa_accuracy']:.1%} | {r['first_text_loss']:.2f} → "
            f"{r['final_text_loss']:.2f} | {r['wall_s']:.0f} | {saved} |"
        )
    lines += ["", "Examples (reference → caption):", ""]
    for r in [{"mode": "base", **before}, *result["learning"]]:
        lines.append(f"- {r['mode']}: " + "; ".join(f"{ref!r} → {got!r}" for ref, got in r["examples"]))
    lines += ["", "Fine-tune commands (BASE = the base run):", ""]
    lines += [f"- {r['mode']}: `{r['command']}`" for r in result["learning"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.steps_timed, args.rounds, args.steps, args.eval_n = 2, 1, 2, 8
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / f"{args.name}.partial.json"  # each phase as it finishes (a slow machine may not reach the end)
    costs = cost(args)
    partial.write_text(json.dumps({"cost": costs}, indent=2) + "\n")
    before = evaluate(UnifiedModel.from_pretrained(args.base), args)
    partial.write_text(json.dumps({"cost": costs, "before": before}, indent=2) + "\n")
    learning = []
    for mode in args.modes.split(","):
        learning.append(finetune(args, mode))
        partial.write_text(json.dumps({"cost": costs, "before": before, "learning": learning}, indent=2) + "\n")
    partial.unlink()
    result = {
        "command": "python bench/lora.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": cpu_model(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "base_params": costs[1]["params"],
        "cost": costs,
        "before": before,
        "learning": learning,
        "provenance": provenance(args.base / "config.toml", {"bench": round(time.perf_counter() - t0, 1)}),
    }
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(result))
    return result


if __name__ == "__main__":
    main()
