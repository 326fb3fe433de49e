"""Peak memory of one training step, with and without activation checkpointing and bf16 autocast.

Each variant (fp32, fp32 + activation checkpointing, bf16, bf16 + activation checkpointing) runs in a fresh
process that builds the model as ``unimm train`` does (the transfusion layout: pixel patches, flow) and draws the
same real batch, then:

1. **RSS**: the first training step (forward, backward, clip, AdamW step, which also allocates the optimizer
   state) from a fresh process; the peak resident set (``VmHWM``, reset first) minus the resident set before.
   Whole-process and allocator-dependent: a coarse check of the finer count below.
2. **tensors**: a second step counted by a ``TorchDispatchMode`` that adds up the bytes of every tensor storage an
   op creates until it is freed: the memory held after the forward (activations saved for backward) and the peak
   over the step, beyond what was alive before it (weights and optimizer state). On CUDA,
   ``torch.cuda.max_memory_allocated`` gives the peak instead.

Results go to ``bench/results/memory.json`` and ``bench/results/memory.md``. Run ``python bench/memory.py``
(defaults: dim 256, depth 8, heads 8, batch 32, 36x36 images in 4x4 patches, about 100 tokens per sequence) or
``--quick`` for a tiny smoke run in one process.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from unimm.config import load_config
from unimm.models import UnifiedModel
from unimm.optim import build_optimizer
from unimm.train.loop import build_tokenizer, make_batch, resolve_data
from unimm.train.stream import ExampleStream

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402
from train_step import dataset_path  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
VARIANTS = {  # name -> (precision, activation checkpointing)
    "fp32": ("fp32", False),
    "fp32 + checkpointing": ("fp32", True),
    "bf16": ("bf16", False),
    "bf16 + checkpointing": ("bf16", True),
}
MB = 2**20


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of tensor storage created inside the mode and not yet freed (``live``), and their maximum (``peak``)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._sizes: dict[tuple, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key, size = (storage.device, storage.data_ptr()), storage.nbytes()
        if size == 0 or key in self._sizes:  # views and in-place results share a storage already counted
            return
        self._sizes[key] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: tuple) -> None:
        self.live -= self._sizes.pop(key, 0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=36)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="memory does not depend on it; 1 spares a shared machine")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--quick", action="store_true", help="tiny sizes, all variants in this process (smoke test)")
    p.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)  # one variant, JSON on stdout
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.dim, args.depth, args.heads, args.batch, args.image_size = 32, 2, 2, 4, 16
    return args


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
        return True
    except OSError:
        return False


def measure(args: argparse.Namespace, variant: str, data_path: Path) -> dict:
    """Memory of one training step of ``variant`` (see the module docstring)."""
    precision, recompute = VARIANTS[variant]
    torch.set_num_threads(args.threads)
    overrides = {
        "data.path": f'"{data_path}"',
        "data.image_size": args.image_size,
        "model.dim": args.dim,
        "model.depth": args.depth,
        "model.heads": args.heads,
        "model.max_seq_len": 128,
        "codec.patch_size": args.patch,
        "train.batch_size": args.batch,
    }
    cfg = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    data, templates = resolve_data(cfg)
    torch.manual_seed(0)
    model = UnifiedModel(cfg, build_tokenizer(cfg, data, templates)).to(args.device).train()
    model.backbone.activation_checkpointing = recompute
    opt = build_optimizer(model, cfg.train.lr, cfg.train.weight_decay, cfg.train.betas)
    batch = make_batch(model, *ExampleStream(data, templates, cfg.data, args.batch, 0).batch(0)).to(args.device)
    cuda = args.device.startswith("cuda")
    mode = LiveTensorBytes()
    after_forward = 0

    def step() -> float:
        nonlocal after_forward
        with torch.autocast(torch.device(args.device).type, torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = model(batch, torch.Generator().manual_seed(0))
        after_forward = mode.live
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    rss_before, reset = _rss_kib("VmRSS"), _reset_rss_peak()
    loss = step()
    rss_peak = _rss_kib("VmHWM") - rss_before if reset else None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with mode:
        step()
    peak = torch.cuda.max_memory_allocated() - base if cuda else mode.peak
    return {
        "variant": variant,
        "precision": precision,
        "activation_checkpointing": recompute,
        "loss": round(loss, 4),
        "seq_len": batch.tokens.shape[1],
        "params": sum(p.numel() for p in model.parameters()),
        "saved_after_forward_mb": round(after_forward / MB, 1),
        "step_peak_mb": round(peak / MB, 1),
        "rss_first_step_mb": round(rss_peak / 1024, 1) if rss_peak is not None else None,
    }


def run(args: argparse.Namespace) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="unimm-bench-"))
    data_path, data_name = dataset_path(scratch)
    rows = []
    for variant in VARIANTS:
        if args.quick:
            rows.append(measure(args, variant, data_path))
            continue
        sizes = ("dim", "depth", "heads", "batch", "image_size", "patch", "threads", "device")
        argv = [a for k in sizes for a in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]
        cmd = [sys.executable, __file__, *argv, "--variant", variant, "--data", str(data_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = rows[0]["step_peak_mb"]
    for r in rows:
        r["peak_vs_fp32"] = round(r["step_peak_mb"] / base, 3) if base else None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "device": args.device,
        "threads": args.threads,
        "torch": torch.__version__,
        "load_average": os.getloadavg()[0],
        "data": data_name,
        "config": {
            "dim": args.dim,
            "depth": args.depth,
            "heads": args.heads,
            "batch": args.batch,
            "image_size": args.image_size,
            "patch": args.patch,
        },
        "table": rows,
    }


def markdown(result: dict) -> str:
    c, rows = result["config"], result["table"]
    how = "torch.cuda.max_memory_allocated" if result["device"].startswith("cuda") else "live tensor storage"
    lines = [
        "# Peak memory of a training step: activation checkpointing and bf16",
        "",
        f"{result['date']} · {result['cpu']} · {result['device']} · {result['threads']} threads · "
        f"torch {result['torch']}",
        "",
        f"Transfusion layout, dim {c['dim']}, depth {c['depth']}, heads {c['heads']}, batch {c['batch']}, "
        f"{c['image_size']}x{c['image_size']} images in {c['patch']}x{c['patch']} patches, sequences padded to "
        f"{rows[0]['seq_len']} tokens, {rows[0]['params'] / 1e6:.1f} M parameters; data: {result['data']}.",
        "",
        f"| variant | saved after forward (MB) | step peak (MB, {how}) | vs fp32 | first-step RSS rise (MB) | loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rss = f"{r['rss_first_step_mb']:.0f}" if r["rss_first_step_mb"] is not None else "n/a"
        lines.append(
            f"| {r['variant']} | {r['saved_after_forward_mb']:.1f} | {r['step_peak_mb']:.1f} | "
            f"{r['peak_vs_fp32']:.2f}× | {rss} | {r['loss']:.4f} |"
        )
    lines += [
        "",
        "*Saved after forward*: tensor memory alive when the forward returns (what backward will read); *step peak*: "
        "the most tensor memory alive at once during forward, backward, clipping and AdamW, beyond the weights and "
        "optimizer state already there. *First-step RSS rise*: the resident set's peak over the first step of a fresh "
        "process (which also allocates AdamW's state) minus the resident set before it; it includes the allocator's "
        "caching, so read it as a coarse check.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.variant:
        print(json.dumps(measure(args, args.variant, args.data)))
        return
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "memory.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
