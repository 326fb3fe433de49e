"""Image sampling throughput of every preset, and how much of it is the transformer.

For each ``configs/*.toml`` preset (built at its own size on the bundled digits, weights untrained: the cost of
sampling does not depend on them), ``model.generate`` runs at batch 1 and batch 32 with the preset's own sampler,
steps and guidance. Forward hooks on the backbone count its passes and time them (synchronised), so each row
splits the wall time into transformer passes and everything else (the head or decoder, the sampler's arithmetic,
Python). The transformer time is the lower bound the issue names (passes x forward time, measured in the same
run): ``total / transformer`` is the factor above it, the target being <= 2.

    python bench/sampling.py                 # writes bench/results/sampling.{json,md}
    python bench/sampling.py --quick         # two presets, batch 1 and 2 (the test)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import PRESETS, Clock, Run, Sizes, build, dataset, sync, write  # noqa: E402
from machine import cpu_model  # noqa: E402
from unimm.models.diffusion_head import ConditionedHead  # noqa: E402
from unimm.models.dit import DiT  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class PassTimer:
    """Forward pre/post hooks on a module: its number of calls and their summed wall time (synchronised on a GPU,
    which makes the passes a little slower there than unhooked)."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.calls, self.seconds, self._t0, self.device = 0, 0.0, 0.0, device
        self.handles = [module.register_forward_pre_hook(self._start), module.register_forward_hook(self._stop)]

    def _start(self, *_) -> None:
        sync(self.device)
        self._t0 = time.perf_counter()

    def _stop(self, *_) -> None:
        sync(self.device)
        self.seconds += time.perf_counter() - self._t0
        self.calls += 1

    def reset(self) -> None:
        self.calls, self.seconds = 0, 0.0

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class MethodTimer(PassTimer):
    """The same count and time for every call of a method of a class (MAR's head steps are
    ``ConditionedHead.run`` calls, not module forwards)."""

    def __init__(self, cls: type, name: str, device: torch.device) -> None:
        self.calls, self.seconds, self._t0, self.device = 0, 0.0, 0.0, device
        self.cls, self.name, self.original = cls, name, getattr(cls, name)

        def timed(obj, *args, **kwargs):
            self._start()
            try:
                return self.original(obj, *args, **kwargs)
            finally:
                self._stop()

        setattr(cls, name, timed)

    def remove(self) -> None:
        setattr(self.cls, self.name, self.original)


def measure(model, batch: int, repeats: int, device: torch.device) -> dict:
    """``model.generate`` on ``batch`` prompts: best of ``repeats`` runs after one warm-up."""
    prompts = [f"handwritten digit {NAMES[i % 10]}" for i in range(batch)]
    # the transformers: the backbone, and a DiT decoder's passes
    timers = {"backbone": [PassTimer(model.backbone, device)]}
    timers["dit"] = [PassTimer(m, device) for m in model.modules() if isinstance(m, DiT)]
    # MAR's MLP head: one `run` per head step, or one `loop` per group (the fused C loop, sampler steps included)
    timers["head"] = [MethodTimer(ConditionedHead, "run", device), MethodTimer(ConditionedHead, "loop", device)]
    every = [t for ts in timers.values() for t in ts]
    try:
        model.generate(prompts, generator=torch.Generator().manual_seed(0))  # warm-up
        best = None
        for r in range(repeats):
            for t in every:
                t.reset()
            sync(device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                images = model.generate(prompts, generator=torch.Generator().manual_seed(r))
            sync(device)
            total = time.perf_counter() - t0
            if not torch.isfinite(images).all():
                raise ValueError("generated images are not finite")
            row = {"total_s": total}
            for name, ts in timers.items():
                row[f"{name}_passes"] = sum(t.calls for t in ts)
                row[f"{name}_s"] = sum(t.seconds for t in ts)
            row["passes"] = row["backbone_passes"] + row["dit_passes"]
            row["transformer_s"] = row["backbone_s"] + row["dit_s"]
            if best is None or total < best["total_s"]:
                best = row
    finally:
        for t in every:
            t.remove()
    best["images_per_s"] = batch / best["total_s"]
    best["latency_s"] = best["total_s"]  # every image of the batch arrives at the end
    best["other_s"] = best["total_s"] - best["transformer_s"]
    best["over_transformer"] = best["total_s"] / best["transformer_s"] if best["transformer_s"] > 0 else None
    return best


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    sizes = Sizes()
    with tempfile.TemporaryDirectory(prefix="sampling_") as scratch:
        data_path, data_what, data_over = dataset(Path(scratch), cpu=False)
        device = torch.device(args.device)
        r = Run(device, args.precision, sizes, data_path, data_over, Path(scratch), Clock(1e9))
        machine = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
        result = {
            "benchmark": "sampling",
            "machine": machine,
            "device": device.type,
            "precision": args.precision,
            "threads": args.threads,
            "torch": torch.__version__,
            "data": data_what,
            "batches": args.batch,
            "repeats": args.repeats,
            "presets": {},
        }
        for preset in args.presets:
            model, _, _ = build(r, preset, [], prepare=False)
            model.eval()
            s = model.cfg.sample
            rows = {str(b): measure(model, b, args.repeats, device) for b in args.batch}
            result["presets"][preset] = {
                "writer": model.cfg.writer.kind,
                "steps": s.steps,
                "cfg": s.cfg,
                "batches": rows,
            }
            print(preset, {b: f"{v['images_per_s']:.1f} img/s, x{v['over_transformer']:.2f}" for b, v in rows.items()})
    return result


def markdown(result: dict) -> str:
    b1, bn = (str(b) for b in result["batches"][:2])
    lines = [
        "# Image sampling per preset: throughput, latency, and the transformer's share",
        "",
        f"{result['machine']} · {result.get('precision', 'fp32')} · {result['threads']} threads · "
        f"torch {result['torch']} · {result['data']} · "
        f"untrained weights at each preset's size; best of {result['repeats']} runs after a warm-up",
        "",
        f"| preset | writer | steps | cfg | passes (b{b1}) | images/s b{b1} | latency b{b1} (s) | images/s b{bn} | "
        f"transformer share b{bn} | total / transformer b{b1} | total / transformer b{bn} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, p in result["presets"].items():
        r1, rn = p["batches"][b1], p["batches"][bn]
        lines.append(
            f"| {name} | {p['writer']} | {p['steps']} | {p['cfg']} | {r1['passes']} | {r1['images_per_s']:.1f} | "
            f"{r1['latency_s']:.3f} | {rn['images_per_s']:.1f} | {rn['transformer_s'] / rn['total_s']:.0%} | "
            f"{r1['over_transformer']:.2f}× | {rn['over_transformer']:.2f}× |"
        )
    lines += [
        "",
        "passes: transformer forwards per `generate` call at batch 1, the backbone's and, for `connector`, its DiT "
        "decoder's (a guided sampler that batches its conditional and unconditional rows makes one pass per step). "
        "total / transformer: wall time over the time spent inside those passes, the lower bound passes × forward "
        "time; the target of issue 21 is ≤ 2×. The rest is the writer's other parts (MAR's MLP diffusion head: its "
        "share is in the JSON as `head_s`; the VAE / VQ decoder), the sampler's arithmetic and Python.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--batch", type=int, nargs=2, default=[1, 32], help="the two batch sizes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--quick", action="store_true", help="quick, chameleon at batch 1 and 2, one repeat")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="default: fp32 on cpu, bf16 on cuda")
    p.add_argument("--out", type=Path, default=RESULTS / "sampling.json")
    args = p.parse_args(argv)
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    args.presets = [s for s in args.presets.split(",") if s]
    if args.quick:
        args.presets, args.batch, args.repeats = ["quick", "chameleon"], [1, 2], 1
    result = run(args)
    write(args.out, result)
    args.out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.out} and {args.out.with_suffix('.md').name}")
    return result


if __name__ == "__main__":
    main()
