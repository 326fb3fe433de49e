"""Training-step throughput of unimm's transfusion layout, against this CPU's matmul peak and transfusion-pytorch.

One process measures, in order:

1. the fp32 matmul peak of this machine at the current thread count (best of several 1024² / 2048² products,
   with torch's BLAS and with oneDNN; the faster library's is the peak);
2. unimm's training step (forward + backward + grad clip + AdamW) on real packed batches, with its FLOPs
   counted by ``torch.utils.flop_counter.FlopCounterMode`` -> achieved GFLOP/s and MFU; again with its linear
   layers through oneDNN (``train.matmul = "onednn"``); again with ``torch.compile``'d blocks (``train.compile``,
   its one-off compile timed apart, its loss on the first batch checked against the eager step's);
3. the same step for lucidrains' ``transfusion-pytorch`` at an identical size and on identical content
   (the same text tokens and the same image patches per sequence), if it is installed.

Results go to ``bench/results/train_step.json`` and ``bench/results/train_step.md``.
Run ``python bench/train_step.py`` (defaults: dim 256, depth 6, heads 8, 28x28 images in 4x4 patches,
batch 32) or ``--quick`` for a tiny smoke run.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from unimm.config import load_config
from unimm.data import make_meta, write_idx_split, write_meta
from unimm.models import UnifiedModel
from unimm.nn.onednn_linear import available as onednn_available
from unimm.nn.onednn_linear import onednn_linears
from unimm.optim import build_optimizer
from unimm.train.loop import build_tokenizer, make_batch, resolve_data
from unimm.train.stream import ExampleStream

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ siblings, however this file is run
from machine import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PEER = "transfusion-pytorch"
INSTALL_HINT = "make bench (it installs the bench extra: pip install torch==2.13.0 -e '.[bench]')"


# ----------------------------------------------------------------------------- machine


def matmul_peak(sizes: tuple[int, ...], repeats: int) -> dict:
    """Best-of-``repeats`` fp32 n x n product rates with torch's BLAS (MKL) and with oneDNN -> {"blas 1024": GFLOP/s,
    ..., "blas_peak", "onednn_peak", "peak": the fastest of all}."""
    from unimm.atlas.throughput import matmul_peak_gflops
    from unimm.nn.onednn_linear import available

    out: dict = {}
    for library in ("blas", "onednn") if available() else ("blas",):
        rates = {f"{library} {n}": matmul_peak_gflops(n, repeats, library) for n in sizes}
        out.update(rates)
        out[f"{library}_peak"] = max(rates.values())
    out["peak"] = max(v for k, v in out.items() if k.endswith("_peak"))
    return out


def contention_note(load: float, threads: int) -> str | None:
    """A warning when other processes already occupy cores this run's threads need."""
    cores = os.cpu_count() or 1
    if load + threads <= cores + 0.5:
        return None
    why = (
        "every parallel op waits for a descheduled OpenMP thread, which slows small ops many-fold"
        if threads > 1
        else "this thread shares its core"
    )
    return (
        f"load average {load:.2f} before the run on {cores} cores with {threads} torch thread(s): {why}; "
        "compare runs only at similar load, or pass --threads to fit the free cores"
    )


# ----------------------------------------------------------------------------- timing


def time_steps(step: Callable[[int], None], warmup: int, iters: int) -> dict:
    """Run ``step(i)`` ``warmup`` times untimed, then ``iters`` times timed -> seconds (median, min, all)."""
    for i in range(warmup):
        step(i)
    times = []
    for i in range(iters):
        t0 = time.perf_counter()
        step(warmup + i)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "all_s": [round(t, 5) for t in times]}


def _cpu_sdpa_flops(q, k, v, *args, out_val=None, **kwargs) -> int:
    return sdpa_flop_count(q.shape, k.shape, v.shape)


def _cpu_sdpa_backward_flops(grad_out, q, k, v, *args, out_val=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out.shape, q.shape, k.shape, v.shape)


_cpu_sdpa_flops._get_raw = _cpu_sdpa_backward_flops._get_raw = True
# FlopCounterMode knows the CUDA SDPA kernels but not the CPU one, which would leave our attention uncounted
# while the peer's einsum attention is counted; count it with torch's own SDPA formula (full L x L scores).
CPU_SDPA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


def count_flops(fwd_bwd: Callable[[], None]) -> int:
    """FLOPs of one forward + backward as FlopCounterMode sees them (matmuls, convs and attention)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
        fwd_bwd()
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------- data


def dataset_path(scratch: Path) -> tuple[Path, str]:
    """The real ``data/mnist`` when prepared, else scikit-learn's digits written as IDX (resized later)."""
    mnist = ROOT / "data" / "mnist"
    if (mnist / "meta.json").is_file():
        return mnist, "data/mnist"
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images / 16 * 255).astype(np.uint8)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    root = scratch / "digits"
    root.mkdir(parents=True, exist_ok=True)
    for split, sl in {"train": slice(0, 1500), "val": slice(1500, 1650), "test": slice(1650, None)}.items():
        write_idx_split(root, split, images[sl], d.target[sl])
    write_meta(root, make_meta("idx", "digits", names, "digit"))
    return root, "scikit-learn digits (8x8, resized)"


# ----------------------------------------------------------------------------- unimm


def unimm_setup(args, data_path: Path):
    overrides = {
        "data.path": f'"{data_path}"',
        "data.image_size": args.image_size,
        "data.vocab_size": args.vocab,
        "model.dim": args.dim,
        "model.depth": args.depth,
        "model.heads": args.heads,
        "codec.patch_size": args.patch,
        "train.batch_size": args.batch,
        "train.tensorboard": "false",
    }
    cfg = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    data, templates = resolve_data(cfg)
    torch.manual_seed(cfg.train.seed)
    tok = build_tokenizer(cfg, data, templates)
    model = UnifiedModel(cfg, tok)
    stream = ExampleStream(data, templates, cfg.data, cfg.train.batch_size, cfg.train.seed)
    drawn = [stream.batch(k) for k in range(args.distinct_batches)]
    return cfg, tok, model, drawn


def bench_unimm(args, cfg, model, drawn, onednn: bool = False, compile_backend: str | None = None) -> dict:
    """Time the training step; ``onednn``: its linear layers through oneDNN (``train.matmul = "onednn"``);
    ``compile_backend``: with ``torch.compile``'d blocks (``train.compile``; BLAS linears, as the setting requires),
    the first step (the compile) timed apart and the loss on the first batch against the eager one's."""
    t = cfg.train
    opt = build_optimizer(model, t.lr, t.weight_decay, t.betas)
    model.train()
    batches = [make_batch(model, images, examples) for images, examples in drawn]
    pad = model.tokenizer.pad_id

    def fwd_bwd(batch, k: int) -> None:
        with onednn_linears(onednn):
            loss, _ = model(batch, torch.Generator().manual_seed(k))
        loss.backward()

    def step(k: int) -> None:
        fwd_bwd(batches[k % len(batches)], k)
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def step_with_packing(k: int) -> None:
        images, examples = drawn[k % len(drawn)]
        batches[k % len(batches)] = make_batch(model, images, examples)
        step(k)

    flops = [count_flops(lambda b=b: fwd_bwd(b, 0)) for b in batches]  # eager: the same FLOPs compiled or not
    opt.zero_grad(set_to_none=True)
    compiled: dict = {}
    if compile_backend is not None:
        eager = _first_loss(model, batches[0])
        model.backbone.compile_blocks(compile_backend)
        t0 = time.perf_counter()
        loss = _first_loss(model, batches[0])
        compiled = {
            "backend": compile_backend,
            "compile_s": time.perf_counter() - t0,
            "loss_eager": eager,
            "loss_compiled": loss,
            "loss_abs_diff": abs(loss - eager),
        }
    packing = time_steps(lambda k: make_batch(model, *drawn[k % len(drawn)]), 1, args.iters)
    timing = time_steps(step, args.warmup, args.iters)
    timing_packed = time_steps(step_with_packing, 1, args.iters)
    tokens = [b.tokens.numel() for b in batches]
    nonpad = [int((b.tokens != pad).sum()) for b in batches]
    if compile_backend is not None:
        model.backbone.compile_blocks(None)
    return {
        **({"compiled": compiled} if compiled else {}),
        "params": sum(p.numel() for p in model.parameters()),
        "seq_len_padded": [b.tokens.shape[1] for b in batches],
        "tokens_per_step": statistics.mean(tokens),
        "nonpad_tokens_per_step": statistics.mean(nonpad),
        "flops_per_step": statistics.mean(flops),
        "step": timing,
        "packing": packing,
        "step_with_packing": timing_packed,
    }


def _first_loss(model: UnifiedModel, batch) -> float:
    """The training loss of one forward + backward (gradients cleared after), generator seeded 0."""
    model.train()
    loss, _ = model(batch, torch.Generator().manual_seed(0))
    loss.backward()
    model.zero_grad(set_to_none=True)
    return float(loss)


# ----------------------------------------------------------------------------- transfusion-pytorch


def peer_version() -> str | None:
    try:
        return importlib.metadata.version(PEER)
    except importlib.metadata.PackageNotFoundError:
        return None


def peer_samples(model: UnifiedModel, drawn) -> list[list]:
    """Our examples as transfusion-pytorch samples: the same text ids and the same patches on the same grid.

    Its forward adds ``<sos>``/``<eos>`` (our ``<bos>``/``<eos>``) and ``[meta] 7 , 7 [som] … [eom]`` around
    each image (our ``<boi> … <eoi>``), so we pass only the content.
    """
    tok, (_, h, w) = model.tokenizer, model.writer.grid  # (frames, rows, cols): one frame
    out = []
    for images, examples in drawn:
        patches = model.writer.codec.encode(images)  # [B, h*w, P]
        batch = []
        for ex, p in zip(examples, patches, strict=True):
            image = p.reshape(h, w, -1).float()
            if ex.task == "t2i":
                text = [] if ex.drop_condition else tok.encode(ex.text)
                items = ([torch.tensor(text)] if text else []) + [image]
            else:
                text = tok.encode(ex.text) if ex.task == "caption" else [*tok.encode(ex.text), tok.sep_id]
                text += tok.encode(ex.answer) if ex.task == "vqa" else []
                items = [image, torch.tensor(text)]
            batch.append(items)
        out.append(batch)
    return out


def bench_peer(args, cfg, model: UnifiedModel, drawn) -> dict:
    from transfusion_pytorch import Transfusion

    torch.manual_seed(cfg.train.seed)
    m = cfg.model
    hidden = model.backbone.cfg.hidden_dim
    peer = Transfusion(
        num_text_tokens=model.tokenizer.vocab_size,
        dim_latent=model.writer.codec.patch_dim,
        channel_first_latent=False,
        modality_default_shape=model.writer.grid[1:],  # (rows, cols) of the one frame
        add_pos_emb=False,
        flow_loss_weight=cfg.writer.weight,
        text_loss_weight=cfg.text.weight,
        prob_uncond=0.0,  # our stream already drops captions for CFG
        transformer=dict(
            dim=m.dim,
            depth=m.depth,
            heads=m.heads,
            dim_head=m.dim // m.heads,
            # its GEGLU width is int(dim * f * 2 / 3): pick f so it equals our SwiGLU width
            ff_expansion_factor=hidden * 3 / (2 * m.dim),
            qk_rmsnorm=False,
            attn_kwargs=dict(gate_values=False),
        ),
    )
    t = cfg.train
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in peer.parameters() if p.dim() >= 2], "weight_decay": t.weight_decay},
            {"params": [p for p in peer.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=t.lr,
        betas=t.betas,
        fused=False,
    )
    peer.train()
    samples = peer_samples(model, drawn)
    seen: list[tuple[int, int]] = []
    hook = peer.transformer.register_forward_pre_hook(lambda mod, a: seen.append(tuple(a[0].shape[:2])))

    def fwd_bwd(k: int) -> None:
        peer(samples[k % len(samples)]).backward()

    def step(k: int) -> None:
        fwd_bwd(k)
        torch.nn.utils.clip_grad_norm_(peer.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    # warm up over every distinct batch first: its 'auto' strategy router times three packing
    # strategies once per new batch structure, which must not land in the timed steps
    for k in range(len(samples)):
        step(k)
    shapes = seen[-len(samples) :]
    flops = [count_flops(lambda k=k: fwd_bwd(k)) for k in range(len(samples))]
    opt.zero_grad(set_to_none=True)
    timing = time_steps(step, args.warmup, args.iters)
    hook.remove()
    return {
        "params": sum(p.numel() for p in peer.parameters()),
        "seq_len_padded": [s[1] for s in shapes],
        "tokens_per_step": statistics.mean(b * n for b, n in shapes),
        "flops_per_step": statistics.mean(flops),
        "step_with_packing": timing,
        "config": {
            "num_text_tokens": model.tokenizer.vocab_size,
            "embedding_rows": peer.text_embed.num_embeddings,
            "dim_latent": model.writer.codec.patch_dim,
            "image_shape": list(model.writer.grid[1:]),
            "ff_hidden": peer.transformer.layers[0][2].fn.net[-1].in_features,
            "unet_skips": True,
            "qk_rmsnorm": False,
            "gate_values": False,
            "attention": "einsum + softmax (its non-flex path; flex attention is CUDA only)",
        },
    }


PEER_DIFFERENCES = [
    "Per block it keeps modules that cannot be switched off: adaptive LayerNorm + ada-LN-zero on both the "
    "attention and the feed-forward (FiLM from a 4*dim time embedding, computed for every token, text included), "
    "an attention-residual mix over all earlier layer outputs, and attention-logit soft-capping.",
    "Its attention is a plain einsum + softmax (flex attention only on CUDA); ours is "
    "F.scaled_dot_product_attention with a boolean mask.",
    "Feed-forward is GEGLU vs our SwiGLU, at the same hidden width (the expansion factor is set so they match).",
    "Its text embedding and logit tables have 134 extra rows (sos/eos/null, som/eom and 129 char-level "
    "meta tokens) on top of the same text vocabulary; it computes logits at every position, ours only where "
    "there is a text target.",
    "Each image costs it [meta] 7 , 7 [som] ... [eom] = 6 extra tokens where ours has <boi> ... <eoi> = 2, "
    "so its sequences are 4 tokens longer for the same content.",
    "Its packing of the ragged text/image lists happens inside forward, so its step time always includes "
    "packing; compare it with our 'step incl. packing'.",
    "Its U-Net skips (concat + dim*2->dim projection in the second half of the layers) stay on: "
    "unet_skips=False fails its own `assert len(skips) == 0` in 0.20.0.",
    "The optional value gates and q/k RMSNorm were switched off; its CFG caption dropout is off "
    "because our example stream already drops captions (same content both sides).",
]


# ----------------------------------------------------------------------------- report


def summarise(name: str, r: dict, timing_key: str, content_tokens: float, peak: float) -> dict:
    s = r[timing_key]["median_s"]
    return {
        "system": name,
        "params": r["params"],
        "gflop_per_step": r["flops_per_step"] / 1e9,
        "step_ms": s * 1e3,
        "tokens_per_s": r["tokens_per_step"] / s,
        "content_tokens_per_s": content_tokens / s,
        "gflops": r["flops_per_step"] / s / 1e9,
        "mfu": r["flops_per_step"] / s / 1e9 / peak,
    }


def _peak_sources(mm: dict) -> str:
    """' (MKL x, oneDNN y)' where both libraries were measured."""
    if "onednn_peak" not in mm:
        return ""
    return f" (the faster of torch's BLAS, MKL: {mm['blas_peak']:.0f}, and oneDNN: {mm['onednn_peak']:.0f})"


def markdown(result: dict) -> str:
    rows = result["table"]
    peer_s = next((r["step_ms"] for r in rows if r["system"].startswith(PEER)), None)
    lines = [
        f"# Training step, {result['size_label']}",
        "",
        f"{result['cpu']}, {result['threads']} torch threads, torch {result['torch']}, "
        f"fp32 matmul peak {result['matmul_gflops']['peak']:.0f} GFLOP/s{_peak_sources(result['matmul_gflops'])}, "
        f"load average at start {result['loadavg_start'][0]:.2f}, {result['date']}.",
        "",
        *([f"**Contention:** {result['contention']}.", ""] if result["contention"] else []),
        "| system | params | GFLOP/step | tokens/s | content tokens/s | step ms | GFLOP/s | MFU "
        "| ratio vs transfusion-pytorch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{peer_s / r['step_ms']:.2f}x" if peer_s else "n/a"
        cells = [
            r["system"],
            f"{r['params'] / 1e6:.1f}M",
            f"{r['gflop_per_step']:.1f}",
            f"{r['tokens_per_s']:,.0f}",
            f"{r['content_tokens_per_s']:,.0f}",
            f"{r['step_ms']:.1f}",
            f"{r['gflops']:.1f}",
            f"{r['mfu']:.0%}",
            ratio,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if result["peer"]["version"] is None:
        status = "skipped (--no-peer)" if result["peer"].get("skipped") else "not installed"
        lines.append(f"| {PEER} | {status} | | | | | | | |")
        if not result["peer"].get("skipped"):
            lines += ["", f"Install the peer with {INSTALL_HINT}."]
    lines += [
        "",
        "tokens/s counts each system's own padded sequence; content tokens/s counts unimm's non-pad tokens for "
        "the same examples, so it compares the same work. The ratio is throughput on identical content "
        "(transfusion-pytorch step ms / this row's step ms); >1 means faster. GFLOP/s uses each model's own "
        "forward+backward FLOPs (FlopCounterMode); MFU divides by the measured matmul peak, the faster library's.",
        "",
        "The oneDNN rows run the same step with its linear layers through oneDNN's inner product "
        '(`train.matmul = "onednn"`, `src/unimm/nn/onednn_linear.py`); the rest (attention, AdamW) is the same '
        "code. On an AMD CPU torch's BLAS, MKL, runs its AVX2 code, oneDNN AVX-512.",
    ]
    comp = result.get("unimm_compiled")
    if comp is not None:
        c = comp["compiled"]
        lines += [
            "",
            f"The compiled rows run the same step with each backbone block `torch.compile`d (`train.compile = true`, "
            f"backend {c['backend']}; linear layers on torch's BLAS, as that setting requires): the elementwise work "
            f"(RoPE, norms, SwiGLU) fused. Its one-off compile took {c['compile_s']:.1f} s (not in the timings); on "
            f"the first batch its loss is {c['loss_compiled']:.6f} against the eager step's {c['loss_eager']:.6f} "
            f"(difference {c['loss_abs_diff']:.1e}).",
        ]
    if result["peer"]["version"] is not None:
        lines += ["", "Setup differences that cannot be removed:", ""]
        lines += [f"- {d}" for d in PEER_DIFFERENCES]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10, help="timed steps; the median is reported")
    p.add_argument("--distinct-batches", type=int, default=3, help="real batches cycled through")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-peer", action="store_true", help=f"skip {PEER}")
    p.add_argument(
        "--compile",
        choices=("inductor", "aot_eager", "none"),
        default="inductor",
        help="backend of the compiled-blocks rows (train.compile); aot_eager checks the path without a C++ compiler",
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke run (dim 64, depth 2, batch 8, 3 steps)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.dim, args.depth, args.heads, args.batch = 64, 2, 4, 8
        args.warmup, args.iters, args.distinct_batches = 1, 3, 2
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    load_start = os.getloadavg()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    contention = contention_note(load_start[0], threads)
    if contention:
        print(f"warning: {contention}", flush=True)
    print(f"load average {load_start[0]:.2f}, {threads} threads; measuring the fp32 matmul peak …", flush=True)
    sizes = (512, 1024) if args.quick else (1024, 2048)
    mm = matmul_peak(sizes, 3 if args.quick else 10)
    print(f"  matmul: {', '.join(f'{k}: {v:.0f}' for k, v in mm.items())} GFLOP/s", flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        data_path, data_label = dataset_path(Path(scratch))
        cfg, tok, model, drawn = unimm_setup(args, data_path)
        print(f"unimm: {sum(p.numel() for p in model.parameters()):,} params; timing …", flush=True)
        ours = bench_unimm(args, cfg, model, drawn)
        dnn = bench_unimm(args, cfg, model, drawn, onednn=True) if onednn_available() else None
        comp = None
        if args.compile != "none":
            print(f"unimm with torch.compile'd blocks ({args.compile}): compiling, then timing …", flush=True)
            comp = bench_unimm(args, cfg, model, drawn, compile_backend=args.compile)
    content = ours["nonpad_tokens_per_step"]
    peak = mm["peak"]
    table = [
        summarise("unimm transfusion", ours, "step", content, peak),
        summarise("unimm transfusion, incl. packing", ours, "step_with_packing", content, peak),
    ]
    if dnn is not None:
        table += [
            summarise("unimm transfusion, oneDNN linears", dnn, "step", content, peak),
            summarise("unimm transfusion, oneDNN linears, incl. packing", dnn, "step_with_packing", content, peak),
        ]
    if comp is not None:
        table += [
            summarise("unimm transfusion, compiled blocks", comp, "step", content, peak),
            summarise("unimm transfusion, compiled blocks, incl. packing", comp, "step_with_packing", content, peak),
        ]
    version = None if args.no_peer else peer_version()
    peer: dict = {"name": PEER, "version": version, "skipped": args.no_peer}
    if version is None and not args.no_peer:
        print(f"{PEER} is not installed; install it with: {INSTALL_HINT}", flush=True)
    if version is not None:
        print(f"{PEER} {version}: timing …", flush=True)
        peer.update(bench_peer(args, cfg, model, drawn))
        peer["differences"] = PEER_DIFFERENCES
        table.append(summarise(f"{PEER} {version}", peer, "step_with_packing", content, peak))
        for row in table[:-1]:
            row["ratio_vs_peer"] = table[-1]["step_ms"] / row["step_ms"]

    result = {
        "benchmark": "train_step",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "size_label": (
            f"dim {args.dim}, depth {args.depth}, heads {args.heads}, {args.image_size}x{args.image_size} "
            f"images in {args.patch}x{args.patch} patches, batch {args.batch}"
        ),
        "quick": args.quick,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "contention": contention,
        "matmul_gflops": mm,
        "size": {
            "dim": args.dim,
            "depth": args.depth,
            "heads": args.heads,
            "image_size": args.image_size,
            "patch": args.patch,
            "image_tokens": (args.image_size // args.patch) ** 2,
            "batch": args.batch,
            "vocab": tok.vocab_size,
            "ffn_hidden": model.backbone.cfg.hidden_dim,
            "dtype": "float32",
        },
        "data": data_label,
        "timing": {"warmup": args.warmup, "iters": args.iters, "distinct_batches": args.distinct_batches},
        "unimm": ours,
        "unimm_onednn": dnn,
        "unimm_compiled": comp,
        "peer": peer,
        "table": table,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_step.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "train_step.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
