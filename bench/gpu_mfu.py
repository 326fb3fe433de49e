"""Where the GPU training step's time goes, and what each lever is worth: the ``mfu`` model of ``gpu_check.py``
(transfusion layout, dim 1024, depth 16) timed phase by phase (forward, backward, clip, optimizer), profiled kernel
by kernel, and retimed with a fused AdamW and with compiled backbone blocks. One JSON and one profiler table.

    bash bench/gpu_check.sh ...   # installs the carried wheels; then, on the same machine:
    python3 bench/gpu_mfu.py --out $OUT/gpu_mfu.json
    python bench/gpu_mfu.py --cpu  # the same code paths at tiny sizes, fp32 (tests)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import (  # noqa: E402
    Clock,
    Run,
    Sizes,
    build,
    cpu_sizes,
    dataset,
    nominal_peak,
    section_peak,
    sync,
    write,
)
from unimm.flops import count_flops  # noqa: E402
from unimm.optim import build_optimizer  # noqa: E402
from unimm.train.stream import ExampleStream, make_batch  # noqa: E402

VARIANTS = ("eager", "fused_adamw", "compiled_blocks")


def optimizer(model: torch.nn.Module, fused: bool, t) -> torch.optim.Optimizer:
    opt = build_optimizer(model, t.lr, t.weight_decay, t.betas)
    if fused:  # the same parameter groups and settings, one fused kernel per group
        opt = torch.optim.AdamW(opt.param_groups, lr=t.lr, betas=t.betas, fused=True)
    return opt


def measure(run: Run, batch: int, variant: str, steps: int, profile_to: Path | None) -> dict:
    """One variant: FLOPs of a forward + backward, then ``steps`` timed steps (after 3 warm-ups), then the same
    steps again phase by phase (a sync after each phase), and optionally a profile of two steps."""
    s = run.sizes
    model, data, _ = build(run, None, [*s.mfu, f"train.batch_size={batch}"], prepare=False)
    t = model.cfg.train
    stream = ExampleStream(*data, model.cfg.data, batch, t.seed)
    batches = [make_batch(model, *stream.batch(k)).to(run.device) for k in range(2)]
    opt = optimizer(model, variant != "eager" and run.device.type == "cuda", t)
    model.train()

    def forward(k: int) -> torch.Tensor:
        with run.autocast():
            loss, _ = model(batches[k % 2], torch.Generator().manual_seed(k))
        return loss

    def step(k: int) -> None:
        forward(k).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    with count_flops() as counter:
        forward(0).backward()
    opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    if variant == "compiled_blocks":  # after counting: the count is of the eager ops
        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
        for block in model.backbone.layers:
            block.compile()
    t0 = time.perf_counter()
    for k in range(3):
        step(k)
    sync(run.device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in range(steps):
        step(k)
    sync(run.device)
    step_s = (time.perf_counter() - t0) / steps
    phases = {"forward": 0.0, "backward": 0.0, "clip": 0.0, "optimizer": 0.0}
    for k in range(steps):
        marks = [time.perf_counter()]
        loss = forward(k)
        sync(run.device)
        marks.append(time.perf_counter())
        loss.backward()
        sync(run.device)
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        sync(run.device)
        marks.append(time.perf_counter())
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(run.device)
        marks.append(time.perf_counter())
        for name, a, b in zip(phases, marks, marks[1:], strict=False):
            phases[name] += (b - a) / steps
    out = {
        "batch": batch,
        "tokens_per_step": batches[0].tokens.numel(),
        "flops_per_step": flops,
        "warmup_s": warm_s,
        "step_s": step_s,
        "achieved_flops": flops / step_s,
        "phase_s": phases,
        "peak_memory_mib": torch.cuda.max_memory_allocated(run.device) / 2**20 if run.device.type == "cuda" else None,
    }
    if profile_to is not None:
        out["profile"] = profile(run, step, profile_to)
    return out


def profile(run: Run, step, path: Path) -> dict:
    """Two steps under ``torch.profiler`` -> the kernel table written to ``path`` and device time by kind."""
    from torch.profiler import ProfilerActivity

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if run.device.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for k in range(2):
            step(k)
        sync(run.device)
    events = prof.key_averages()
    key = "self_device_time_total" if run.device.type == "cuda" else "self_cpu_time_total"
    path.write_text(events.table(sort_by=key, row_limit=40) + "\n")
    kinds: dict[str, float] = {}
    for e in events:
        us = getattr(e, key, 0.0)
        name = e.key.lower()
        if us <= 0 or name.startswith(("aten::", "cudastream", "profilerstep")):
            continue  # operator rows double-count the kernels under them; keep kernel (or CPU leaf) rows
        kind = next(
            (k for k, words in KERNEL_KINDS if any(w in name for w in words)),
            "other",
        )
        kinds[kind] = kinds.get(kind, 0.0) + us / 2 / 1e6
    return {"seconds_per_step_by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1])), "table": path.name}


KERNEL_KINDS = (
    ("matmul", ("gemm", "matmul", "cutlass", "sm90_xmma", "nvjet", "ampere_", "addmm", "aten::mm")),
    ("attention", ("flash", "attention", "fmha", "sdpa")),
    ("optimizer", ("adam", "foreach", "multi_tensor")),
    ("reduction/norm", ("reduce", "norm", "softmax", "cross_entropy", "nll")),
    ("copy/cast", ("copy", "cast", "to_copy", "memcpy", "memset", "cat")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "triton", "fused")),
)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU in fp32 (what the tests run)")
    p.add_argument("--out", type=Path, default=None, help="the JSON (default bench/results/gpu_mfu[_cpu].json)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {','.join(VARIANTS)}")
    p.add_argument("--batch", type=int, default=None, help="the batch (the one gpu_check found: 1024 on an H200)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (10; 2 with --cpu)")
    args = p.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU, or pass --cpu")
    out = args.out or Path(__file__).parent / "results" / ("gpu_mfu_cpu.json" if args.cpu else "gpu_mfu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    sizes: Sizes = cpu_sizes() if args.cpu else Sizes()
    device = torch.device("cpu") if args.cpu else torch.device("cuda", 0)
    with tempfile.TemporaryDirectory(prefix="gpu_mfu_") as scratch:
        data_path, _, data_over = dataset(Path(scratch), args.cpu)
        run = Run(device, "fp32" if args.cpu else "bf16", sizes, data_path, data_over, Path(scratch), Clock(600))
        result = {
            "benchmark": "gpu_mfu",
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "precision": run.precision,
            "mfu_config": sizes.mfu,
            "peak": section_peak(run),
            "variants": {},
        }
        peak = result["peak"]["measured_peak_flops"]
        nominal = nominal_peak(result["device"]) if device.type == "cuda" else None
        for i, name in enumerate(v for v in args.variants.split(",") if v):
            if name not in VARIANTS:
                p.error(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
            t0 = time.perf_counter()
            try:
                table = out.with_name(out.stem + "_profile.txt") if i == 0 else None
                row = measure(run, args.batch or sizes.mfu_batch, name, args.steps or sizes.mfu_steps, table)
                row["mfu_vs_measured_peak"] = row["achieved_flops"] / peak
                row["mfu_vs_nominal_peak"] = row["achieved_flops"] / nominal if nominal else None
                row["status"] = "ok"
            except Exception as e:  # noqa: BLE001 - each variant on its own; the others still run
                row = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            row["seconds"] = round(time.perf_counter() - t0, 2)
            result["variants"][name] = row
            print(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'traceback'}, default=str)}", flush=True)
            write(out, result)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return result


if __name__ == "__main__":
    main()
