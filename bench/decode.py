"""Greedy decoding speed of unimm's backbone with its KV cache, against transformers' ``generate``.

One process builds a seeded random-weight ``transformers.LlamaForCausalLM``, saves it as safetensors, loads the
same weights into unimm with ``Backbone.from_hf`` and, for each batch size, times greedy decoding of the same
prompt on both sides:

1. unimm: prefill the prompt into a ``KVCache``, then one token per forward, choosing with ``select_next``
   (temperature 0 = argmax), the loop written out below;
2. unimm-compiled: the same weights in ``StaticDecoder``: a fixed-shape cache written in place and a
   ``torch.compile``'d step (its one-off compile is timed apart), its products through oneDNN on packed weights
   from 2 rows up where oneDNN beats MKL on this CPU (``onednn_linear.beats_blas``: AVX-512 that MKL leaves
   unused, as on AMD; otherwise MKL's ``mm``) and, at 1 row, as multiply-and-sum loops of inductor's (timed
   against the same step on MKL's ``sgemv``, the control);
3. transformers: ``model.generate(..., do_sample=False, use_cache=True)`` with exactly ``--new-tokens`` tokens,
   in the model's default attention implementation (reported).

All must produce identical tokens (``tokens_match``, ``compiled_tokens_match``; the first diverging step is
reported otherwise). Then the step's products alone, MKL against oneDNN, at a few row counts, and the square
product peaks of both libraries.
Results go to ``bench/results/decode.json`` and ``bench/results/decode.md``.
Run ``python bench/decode.py`` (defaults: hidden 256, 6 layers, 8 heads, 4 kv heads, batch 1 and 8, prompt 32,
128 new tokens) or ``--quick`` for a tiny smoke run.
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

from unimm.atlas.throughput import matmul_peak_gflops
from unimm.nn import packed_linear
from unimm.nn.backbone import Backbone
from unimm.nn.onednn_linear import beats_blas
from unimm.nn.static_decoding import StaticDecoder, decode_weights
from unimm.samplers.text import select_next

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ siblings, however this file is run
from machine import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PAD_ID = 0
SYSTEMS = ("unimm", "unimm-compiled", "transformers")


# ----------------------------------------------------------------------------- machine


def wait_for_quiet(threshold: float, max_wait_s: float, poll_s: float = 10.0) -> dict:
    """Poll the 1-minute load average until it is below ``threshold`` or ``max_wait_s`` has passed."""
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    while load >= threshold and time.monotonic() - t0 < max_wait_s:
        print(f"  load average {load:.2f} >= {threshold}; waiting …", flush=True)
        time.sleep(poll_s)
        load = os.getloadavg()[0]
    return {"threshold": threshold, "waited_s": round(time.monotonic() - t0, 1), "quiet": load < threshold}


# ----------------------------------------------------------------------------- models


def build_models(args, scratch: Path) -> tuple[torch.nn.Module, Backbone]:
    """A seeded random ``LlamaForCausalLM`` and the same weights loaded into unimm through safetensors."""
    torch.manual_seed(args.seed)
    cfg = transformers.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(2048, args.prompt_len + args.new_tokens),
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        pad_token_id=PAD_ID,
        bos_token_id=None,
        eos_token_id=None,
    )
    ref = transformers.LlamaForCausalLM(cfg).eval()
    ref.save_pretrained(scratch, safe_serialization=True)
    ours = Backbone.from_hf(scratch).eval()
    return ref, ours


def unimm_decode(model: Backbone, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding with the KV cache: prompt [B, P] -> new token ids [B, new_tokens]."""
    cache = model.new_cache(prompt.shape[1] + new_tokens)
    logits = model.lm_logits(prompt, cache)[:, -1]
    out = [select_next(logits)]
    for _ in range(new_tokens - 1):
        logits = model.lm_logits(out[-1][:, None], cache)[:, -1]
        out.append(select_next(logits))
    return torch.stack(out, 1)


def compiled_decode(decoder: StaticDecoder, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding with the fixed-shape, ``torch.compile``'d step (``nn/static_decoding.py``)."""
    return decoder.generate(prompt, new_tokens)


def hf_decode(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """``generate`` with exactly ``new_tokens`` greedy tokens: prompt [B, P] -> new token ids [B, new_tokens]."""
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        use_cache=True,
        pad_token_id=PAD_ID,
        eos_token_id=None,
    )
    return out[:, prompt.shape[1] :]


def first_divergence(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """The first decoding step where any row differs, or None when a == b ([B, N] each)."""
    differs = (a != b).any(0).nonzero()
    return int(differs[0]) if len(differs) else None


# ----------------------------------------------------------------------------- timing


def time_alternating(runs: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, dict]:
    """Time each callable ``repeats`` times after ``warmup`` untimed calls, alternating between them so that
    machine drift hits every system alike -> {name: seconds (median, min, all)}."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return {
        name: {"median_s": statistics.median(ts), "min_s": min(ts), "all_s": [round(t, 5) for t in ts]}
        for name, ts in times.items()
    }


def time_blocks(runs: dict[str, Callable[[], None]], rounds: int, per_block: int) -> dict[str, dict]:
    """Like :func:`time_alternating`, but each turn is a block: one untimed call, then ``per_block`` timed ones.
    For the product sweep, whose two libraries hold separate weight copies (2 x 18 MB at the default size, more
    than this CPU's 32 MB L3): call by call alternation would time each library reading from memory, which a
    decoding step, using one copy, does not."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            run()
            for _ in range(per_block):
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
    return {name: {"median_s": statistics.median(ts), "min_s": min(ts)} for name, ts in times.items()}


def head_to_head(a: Callable[[], None], b: Callable[[], None], pairs: int) -> dict:
    """Time ``a`` and ``b`` alone, in ``pairs`` pairs (the order alternating pair by pair) -> the median and the
    10 / 90 % quantiles of the per-pair ratio time(b) / time(a): the speed-up of a over b with nothing else run in
    between (a decoder decoding prompt after prompt)."""
    a(), b()
    ratios = []
    for i in range(pairs):
        times = {}
        for name, run in (("a", a), ("b", b)) if i % 2 == 0 else (("b", b), ("a", a)):
            t0 = time.perf_counter()
            run()
            times[name] = time.perf_counter() - t0
        ratios.append(times["b"] / times["a"])
    q = statistics.quantiles(ratios, n=10)
    return {"pairs": pairs, "median": statistics.median(ratios), "q10": q[0], "q90": q[-1]}


def profile_unimm(model: Backbone, prompt: torch.Tensor, new_tokens: int, top: int = 15) -> dict:
    """torch.profiler over one unimm decode: the ops with the most self CPU time, and the op-call count."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        unimm_decode(model, prompt, new_tokens)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "total_self_cpu_ms": total / 1e3,
        "op_calls_per_token": sum(e.count for e in events) / new_tokens,
        "top_ops": [
            {
                "op": e.key,
                "calls": e.count,
                "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 3),
                "share": round(e.self_cpu_time_total / total, 4),
            }
            for e in rows
        ],
    }


def linear_kernels(model: Backbone, rows: list[int], repeats: int = 7) -> list[dict]:
    """Every linear product of one decoding step (the model's decode weights) at each row count, with MKL's
    ``mm`` on the transposed copy (what the step uses without packs) and with oneDNN on a pack made for that row
    count, alternating -> [{rows, mkl_us, onednn_us, ...}] (microseconds per step's worth of products)."""
    if not packed_linear.available():
        return []
    out = []
    for r in rows:
        weights = list(decode_weights(model).values())
        packed_linear.pack(weights, r)
        xs = [torch.randn(r, w.shape[1]) for w in weights]

        def mkl(xs=xs, weights=weights) -> None:
            for x, w in zip(xs, weights, strict=True):
                torch.mm(x, w.t())

        def onednn(xs=xs, weights=weights) -> None:
            for x, w in zip(xs, weights, strict=True):
                packed_linear.decode_linear(x, w.t(), None)

        with torch.inference_mode():
            t = time_blocks({"mkl": mkl, "onednn": onednn}, rounds=repeats, per_block=5)
        flops = 2 * r * sum(w.numel() for w in weights)
        row = {"rows": r, "products": len(weights)}
        for name in ("mkl", "onednn"):
            row[f"{name}_us"] = t[name]["median_s"] * 1e6
            row[f"{name}_gflops"] = flops / t[name]["median_s"] / 1e9
        row["onednn_speedup"] = row["mkl_us"] / row["onednn_us"]
        out.append(row)
    return out


def square_peaks(n: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of an n x n x n fp32 product with MKL's ``mm`` and with oneDNN (the atlas's peak measure)."""
    libraries = {"mkl": "blas", "onednn": "onednn"} if packed_linear.available() else {"mkl": "blas"}
    return {"n": n, **{f"{k}_gflops": matmul_peak_gflops(n, repeats, lib) for k, lib in libraries.items()}}


def bench_batch(args, ref, ours, batch: int) -> dict:
    """Check token equality and time both systems at one batch size."""
    prompt = torch.randint(1, args.vocab, (batch, args.prompt_len), generator=torch.Generator().manual_seed(batch))
    n = args.new_tokens
    with torch.inference_mode():
        ours_tokens = unimm_decode(ours, prompt, n)
    with torch.no_grad():
        ref_tokens = hf_decode(ref, prompt, n)
    decoder = StaticDecoder(ours, batch, args.prompt_len + n)
    t0 = time.perf_counter()
    with torch.inference_mode():
        compiled_tokens = compiled_decode(decoder, prompt, n)  # the first call compiles the step
    compile_s = time.perf_counter() - t0
    diverge = first_divergence(ours_tokens, ref_tokens)
    compiled_diverge = first_divergence(compiled_tokens, ref_tokens)

    def run_ours() -> None:
        with torch.inference_mode():
            unimm_decode(ours, prompt, n)

    def run_compiled() -> None:
        with torch.inference_mode():
            compiled_decode(decoder, prompt, n)

    def run_ref() -> None:
        with torch.no_grad():  # generate itself runs under no_grad
            hf_decode(ref, prompt, n)

    runs = {"unimm": run_ours, "unimm-compiled": run_compiled, "transformers": run_ref}
    control = None
    if decoder.linears == "rows":  # the control: the same compiled step with MKL's sgemv products
        control = StaticDecoder(ours, batch, args.prompt_len + n, rows=False)
        with torch.inference_mode():
            control_tokens = compiled_decode(control, prompt, n)

        def run_control() -> None:
            with torch.inference_mode():
                compiled_decode(control, prompt, n)

        runs["unimm-compiled-sgemv"] = run_control
    t = time_alternating(runs, args.warmup, args.repeats)
    row = {
        "batch": batch,
        "tokens_match": diverge is None,
        "first_divergence": diverge,
        "compiled_tokens_match": compiled_diverge is None,
        "compiled_first_divergence": compiled_diverge,
        "compile_s": compile_s,
        "compiled_packed": decoder.packed,
        "compiled_linears": decoder.linears,
        "timing": t,
    }
    if control is not None:
        with_rows, sgemv = t["unimm-compiled"]["median_s"], t["unimm-compiled-sgemv"]["median_s"]
        row["row_products"] = {
            "ms_per_token": with_rows / n * 1e3,
            "sgemv_ms_per_token": sgemv / n * 1e3,
            "speedup": sgemv / with_rows,
            "sgemv_tokens_match": first_divergence(control_tokens, ref_tokens) is None,
            "alone": head_to_head(run_compiled, run_control, pairs=4 * args.repeats),
        }
    for name in SYSTEMS:
        s = t[name]["median_s"]
        row[name] = {"new_tokens_per_s": batch * n / s, "ms_per_token": s / n * 1e3, "total_ms": s * 1e3}
    row["speed_ratio"] = row["unimm"]["new_tokens_per_s"] / row["transformers"]["new_tokens_per_s"]
    row["compiled_speed_ratio"] = row["unimm-compiled"]["new_tokens_per_s"] / row["transformers"]["new_tokens_per_s"]
    return row


# ----------------------------------------------------------------------------- report


def markdown(result: dict) -> str:
    s = result["size"]
    lines = [
        f"# Greedy decoding, hidden {s['hidden']}, {s['layers']} layers, {s['heads']} heads / {s['kv_heads']} kv "
        f"heads, vocab {s['vocab']}, prompt {s['prompt_len']}, {s['new_tokens']} new tokens",
        "",
        f"{result['cpu']}, {result['threads']} torch threads, torch {result['torch']}, transformers "
        f"{result['transformers']} (attention: {result['hf_attn_implementation']}), load average at start "
        f"{result['loadavg_start'][0]:.2f}, at measurement {result['loadavg_measure'][0]:.2f}, {result['date']}.",
        "",
        "| batch | system | new tokens/s | ms/token | tokens match | unimm / transformers |",
        "|---:|---|---:|---:|---|---:|",
    ]
    for r in result["table"]:
        for name in SYSTEMS:
            m = r[name]
            if name == "transformers":
                match, ratio = "(reference)", "1.00x"
            else:
                key = "" if name == "unimm" else "compiled_"
                ok, step = r[f"{key}tokens_match"], r[f"{key}first_divergence"]
                match, ratio = ("yes" if ok else f"no (step {step})"), f"{r[f'{key}speed_ratio']:.2f}x"
            cells = [str(r["batch"]), name, f"{m['new_tokens_per_s']:,.0f}", f"{m['ms_per_token']:.2f}", match, ratio]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Median of {result['timing']['repeats']} runs after {result['timing']['warmup']} warm-up, the systems "
        "alternating. A run is the whole decode: prefill of the prompt and every new token. new tokens/s = batch x "
        "new tokens / run time; ms/token = run time / new tokens (one decoding step, all rows); the ratio is "
        "throughput, > 1 means unimm is faster. unimm runs under torch.inference_mode, generate under no_grad.",
        "",
        "`unimm` is the growing KV cache, eager (what captioning uses); `unimm-compiled` the fixed-shape "
        "`StaticDecoder` with its `torch.compile`'d step (inductor), whose one-off compile took "
        + ", ".join(f"{r['compile_s']:.1f} s at batch {r['batch']}" for r in result["table"])
        + " (not in the timings). Its linear products run through oneDNN with the weights packed for the batch at "
        + (", ".join(f"batch {r['batch']}" for r in result["table"] if r.get("compiled_packed")) or "no batch")
        + " (`nn/packed_linear.py`; from 2 rows where oneDNN beats MKL on the CPU, "
        + f"`onednn_linear.beats_blas`: {'yes' if result.get('onednn_beats_blas') else 'no'} here), otherwise "
        "MKL's `mm` on transposed weight copies; at batch 1 as multiply-and-sums along the weights' own rows (below).",
    ]
    for r in result["table"]:
        if r.get("row_products"):
            rp = r["row_products"]
            lines += [
                "",
                f"At batch {r['batch']} the compiled step writes each product as a multiply-and-sum along the rows "
                "of the weight `[out, in]`, which inductor turns into dot products split over the threads "
                f"(`nn/row_linear.py`): {rp['ms_per_token']:.2f} ms/token "
                f"against {rp['sgemv_ms_per_token']:.2f} with MKL's one-thread `sgemv` (on transposed copies) in the "
                "same step, timed in "
                f"the same alternation ({rp['speedup']:.2f}x; the sgemv step's tokens match: "
                f"{'yes' if rp['sgemv_tokens_match'] else 'no'}). The two steps alone, in "
                f"{rp['alone']['pairs']} alternating pairs with no other system between them (a decoder decoding "
                f"prompt after prompt): the multiply-and-sum step {rp['alone']['median']:.2f}x as fast (median of "
                f"the pairs' ratios; 10-90 % {rp['alone']['q10']:.2f}-{rp['alone']['q90']:.2f}x).",
            ]
    if result.get("linear_kernels"):
        lines += [
            "",
            "## The step's linear products, MKL or oneDNN",
            "",
            f"All {result['linear_kernels'][0]['products']} products of one decoding step (this model's weights), "
            "median over alternating blocks (one untimed call, then 5 timed: each library's copy warm in cache, as in "
            "a decoding step): MKL's `mm` on the transposed weight copy against oneDNN on a weight packed for the "
            "row count.",
            "",
            "| rows | MKL µs | oneDNN µs | MKL GFLOP/s | oneDNN GFLOP/s | oneDNN speed-up |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {k['rows']} | {k['mkl_us']:.0f} | {k['onednn_us']:.0f} | {k['mkl_gflops']:.1f} | "
            f"{k['onednn_gflops']:.1f} | {k['onednn_speedup']:.2f}x |"
            for k in result["linear_kernels"]
        ]
        pk = result.get("square_peaks") or {}
        if "onednn_gflops" in pk:
            lines += [
                "",
                f"A square {pk['n']}-product: MKL {pk['mkl_gflops']:.0f} GFLOP/s, oneDNN {pk['onednn_gflops']:.0f} "
                "GFLOP/s. On an AMD processor MKL runs its AVX2 code and oneDNN the AVX-512 the CPU has; on an "
                "Intel one both use AVX-512.",
            ]
    if result.get("profile"):
        p = result["profile"]
        lines += [
            "",
            f"## unimm decode profile (batch {p['batch']})",
            "",
            f"{p['op_calls_per_token']:.0f} profiled op calls per token, {p['total_self_cpu_ms']:.0f} ms self CPU.",
            "",
            "| op | calls | self CPU ms | share |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {o['op']} | {o['calls']} | {o['self_cpu_ms']:.1f} | {o['share']:.1%} |" for o in p["top_ops"]]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=688)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15, help="timed runs per system; the median is reported")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--kernel-rows", type=int, nargs="*", default=[1, 2, 8, 32],
                   help="row counts of the MKL / oneDNN product sweep (none: skip it)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-wait", type=float, default=180, help="seconds to wait for a 1-min load average < 0.5")
    p.add_argument("--profile", choices=["auto", "always", "never"], default="auto",
                   help="profile the unimm loop (auto: when unimm is > 1.5x slower than transformers)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="tiny smoke run (hidden 64, 2 layers, 16 new tokens)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate = 64, 2, 4, 2, 128
        args.new_tokens, args.warmup, args.repeats, args.max_wait, args.kernel_rows = 16, 1, 3, 0, [1, 8]
    return args


def run(args) -> dict:
    """Build, check and time; returns the result dict (nothing is written)."""
    load_start = os.getloadavg()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as scratch:
        ref, ours = build_models(args, Path(scratch))
    quiet = wait_for_quiet(0.5, args.max_wait) if args.max_wait > 0 else None
    load_measure = os.getloadavg()
    print(f"load average {load_measure[0]:.2f}, {threads} threads; timing …", flush=True)
    table = []
    for b in args.batch:
        row = bench_batch(args, ref, ours, b)
        print(
            f"  batch {b}: unimm {row['unimm']['new_tokens_per_s']:.0f} tok/s, compiled "
            f"{row['unimm-compiled']['new_tokens_per_s']:.0f}, transformers "
            f"{row['transformers']['new_tokens_per_s']:.0f} tok/s, ratios {row['speed_ratio']:.2f} / "
            f"{row['compiled_speed_ratio']:.2f}, tokens match {row['tokens_match']} / {row['compiled_tokens_match']}",
            flush=True,
        )
        table.append(row)
    kernels = linear_kernels(ours, args.kernel_rows) if args.kernel_rows else []
    peaks = square_peaks(256 if args.quick else 2048)
    load_end = os.getloadavg()
    slow = [r for r in table if r["speed_ratio"] < 1 / 1.5]
    profile = None
    if args.profile == "always" or (args.profile == "auto" and slow):
        b = (slow or table)[0]["batch"]
        prompt = torch.randint(1, args.vocab, (b, args.prompt_len), generator=torch.Generator().manual_seed(b))
        profile = {"batch": b, **profile_unimm(ours, prompt, args.new_tokens)}
    return {
        "benchmark": "decode",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": args.quick,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "onednn_beats_blas": beats_blas(),
        "threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "hf_attn_implementation": ref.config._attn_implementation,
        "loadavg_start": load_start,
        "loadavg_measure": load_measure,
        "loadavg_end": load_end,
        "quiet_wait": quiet,
        "size": {
            "hidden": args.hidden,
            "layers": args.layers,
            "heads": args.heads,
            "kv_heads": args.kv_heads,
            "intermediate": args.intermediate,
            "vocab": args.vocab,
            "params": sum(p.numel() for p in ours.parameters()),
            "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens,
            "batches": args.batch,
            "dtype": "float32",
        },
        "timing": {"warmup": args.warmup, "repeats": args.repeats},
        "table": table,
        "linear_kernels": kernels,
        "square_peaks": peaks,
        "profile": profile,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decode.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "decode.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
