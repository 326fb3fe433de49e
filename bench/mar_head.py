"""MAR's diffusion-head products on this CPU: MKL's ``addmm`` against oneDNN, and what batch 1's head steps cost.

The numbers behind ``models/diffusion_head.py``'s choices (``ONEDNN_MIN_ROWS``, the table limit) and behind the
README's account of why MAR stays above 2x its transformer time at batch 1:

- ``products``: at each row count, one product of the head's width-128 layers (128 -> 128) and one of its
  modulation layer (128 -> 3 x 128 per block + 2 x 128 = 1,408 at the preset's depth 3), MKL's ``addmm`` on
  the transposed weight against oneDNN's inner product on a weight packed for that row count; median of
  alternating runs;
- ``table``: the modulations of one batch-32 group (50 levels x 192 rows in one 9,600-row product) against the
  same work as 50 products of 192 rows (what the head does past ``table_limit``);
- ``step``: one head step of a batch-1 group (6 rows with guidance), ``ConditionedHead.run``, as MAR samples it;
- ``group``: a batch-1 group's whole sampler (the preset's 50 DDPM steps with guidance), step by step in PyTorch
  against the fused C loop (``models/head_loop.py``) with the same noise; their largest difference.

    python bench/mar_head.py            # writes bench/results/mar_head.{json,md}
    python bench/mar_head.py --quick    # fewer repeats (the test)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402
from unimm.models import head_loop  # noqa: E402
from unimm.models.diffusion_head import DiffusionHead  # noqa: E402
from unimm.nn.onednn_linear import available as onednn_available  # noqa: E402
from unimm.nn.onednn_linear import beats_blas  # noqa: E402
from unimm.objectives.image_diffusion import DDPMObjective  # noqa: E402
from unimm.samplers.affine import coefficients, step_noise  # noqa: E402
from unimm.samplers.guidance import guide  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, calls: int) -> float:
    """Seconds per call of ``fn`` over ``calls`` calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def compare(a, b, calls: int, repeats: int) -> tuple[float, float]:
    """Median microseconds per call of ``a`` and ``b``, timed in alternation after a warm-up."""
    timed(a, calls), timed(b, calls)
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(a, calls))
        tb.append(timed(b, calls))
    return 1e6 * statistics.median(ta), 1e6 * statistics.median(tb)


def products(rows_list: list[int], width: int, mod: int, calls: int, repeats: int) -> list[dict]:
    out = []
    for rows in rows_list:
        row = {"rows": rows}
        for name, n_out in (("layer", width), ("modulation", mod)):
            w, b, x = torch.randn(n_out, width), torch.randn(n_out), torch.randn(rows, width)
            wt, pack = w.t().contiguous(), torch.ops.mkldnn._reorder_linear_weight(w, batch_size=rows)
            mkl, dnn = compare(
                lambda b=b, x=x, wt=wt: torch.addmm(b, x, wt),
                lambda b=b, x=x, pack=pack: torch.ops.mkldnn._linear_pointwise(x, pack, b, "none", [], ""),
                calls,
                repeats,
            )
            row[f"{name}_mkl_us"], row[f"{name}_onednn_us"] = mkl, dnn
        out.append(row)
    return out


def table(levels: int, rows: int, width: int, mod: int, repeats: int) -> dict:
    """One levels x rows product against ``levels`` products of ``rows`` rows, both on oneDNN."""
    w, b = torch.randn(mod, width), torch.randn(mod)
    x = torch.randn(levels * rows, width)
    pack_all = torch.ops.mkldnn._reorder_linear_weight(w, batch_size=levels * rows)
    pack_one = torch.ops.mkldnn._reorder_linear_weight(w, batch_size=rows)
    chunks = list(x.split(rows))

    def whole():
        torch.ops.mkldnn._linear_pointwise(x, pack_all, b, "none", [], "")

    def per_level():
        for c in chunks:
            torch.ops.mkldnn._linear_pointwise(c, pack_one, b, "none", [], "")

    one, many = compare(whole, per_level, 3, repeats)
    flops = 2 * levels * rows * width * mod
    return {"levels": levels, "rows": rows, "table_us": one, "per_level_us": many,
            "table_gflops": flops / one / 1e3, "per_level_gflops": flops / many / 1e3}  # fmt: skip


def step(width: int, depth: int, calls: int, repeats: int) -> dict:
    """``ConditionedHead.run`` at batch 1 with guidance: 3 positions x 2 rows, 50 levels."""
    torch.manual_seed(0)
    head = DiffusionHead(patch_dim=4, cond_dim=128, width=width, depth=depth).eval()
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.05)
    with torch.inference_mode():
        conditioned = head.conditioned(torch.rand(50), torch.randn(6, 128))
        x, index = torch.randn(6, 4), torch.tensor([7])
        run, _ = compare(lambda: conditioned.run(x, index), lambda: None, calls, repeats)
        w, b = torch.randn(width, width).t().contiguous(), torch.randn(width)
        h = torch.randn(6, width)
        mm, _ = compare(lambda: torch.addmm(b, h, w), lambda: None, calls, repeats)
    products_per_step = 2 * depth + 2
    return {"rows": 6, "run_us": run, "addmm_6_rows_us": mm, "products_per_step": products_per_step,
            "products_share": products_per_step * mm / run}  # fmt: skip


def condition(width: int, depth: int, calls: int, repeats: int) -> dict:
    """A batch-1 group's ``PreparedHead.condition`` (6 rows, 50 levels) on the PreparedHead a sampler keeps, against
    the same on a fresh one each time (the transposed modulation weight and the table's memory made anew, as every
    group did before they were kept), on MKL's path; the fresh PreparedHead's own layout time is subtracted."""
    torch.manual_seed(0)
    head = DiffusionHead(patch_dim=4, cond_dim=128, width=width, depth=depth).eval()
    level, z = torch.rand(50), torch.randn(6, 128)
    with torch.inference_mode():
        kept = head.prepared(level)
        reused, fresh = compare(
            lambda: kept.condition(z, onednn=False),
            lambda: head.prepared(level).condition(z, onednn=False),
            calls,
            repeats,
        )
        layout, _ = compare(lambda: head.prepared(level), lambda: None, calls, repeats)
    return {"rows": 6, "levels": 50, "reused_us": reused, "fresh_us": fresh - layout, "layout_us": layout}


def group(width: int, depth: int, calls: int, repeats: int, positions: int = 3, steps: int = 50) -> dict | None:
    """A batch-1 group's DDPM sampler with guidance (``positions`` x 2 rows), the PyTorch steps against the fused
    loop, from the same noise; None where the loop is not built."""
    if not head_loop.available():
        return None
    torch.manual_seed(0)
    head = DiffusionHead(patch_dim=4, cond_dim=128, width=width, depth=depth).eval()
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.05)
    objective, scale = DDPMObjective(), 3.0
    times = objective.sampler_times("ddpm", steps)
    plan = objective.affine_steps("ddpm", steps, temperature=1.0)
    with torch.inference_mode():
        conditioned = head.prepared(objective.level(times)).condition(torch.randn(2 * positions, 128))
        x = torch.randn(positions, 4)
        index = torch.searchsorted(times, torch.tensor([s.t for s in plan]))

        def steps_in_torch():
            def fn(x_t, t):
                return guide(conditioned.run(torch.cat([x_t, x_t]), torch.searchsorted(times, t[:1])), scale)

            return objective.run_sampler("ddpm", fn, x, steps, torch.Generator().manual_seed(1))

        def fused():
            noise = step_noise(plan, x, torch.Generator().manual_seed(1))
            return conditioned.loop(x, index, coefficients(plan), noise, scale)

        eager_us, fused_us = compare(steps_in_torch, fused, calls, repeats)
        diff = (steps_in_torch() - fused()).abs().max().item()
    return {"rows": 2 * positions, "steps": steps, "torch_us": eager_us, "fused_us": fused_us,
            "speedup": eager_us / fused_us, "max_abs_diff": diff}  # fmt: skip


def markdown(r: dict) -> str:
    lines = [
        "# MAR's diffusion-head products: MKL or oneDNN",
        "",
        f"{r['machine']} · {r['threads']} threads · torch {r['torch']} · {r['date']}; median of "
        f"{r['repeats']} alternating runs",
        "",
        f"| rows | {r['width']}->{r['width']} MKL µs | oneDNN µs | {r['width']}->{r['mod']} MKL µs | oneDNN µs |",
        "|---:|---:|---:|---:|---:|",
    ]
    for p in r["products"]:
        lines.append(
            f"| {p['rows']} | {p['layer_mkl_us']:.1f} | {p['layer_onednn_us']:.1f} | {p['modulation_mkl_us']:.1f} | "
            f"{p['modulation_onednn_us']:.1f} |"
        )
    t, s = r["table"], r["step"]
    lines += [
        "",
        "oneDNN's weights are packed for the row count. Where oneDNN beats MKL on the CPU "
        f"(`onednn_linear.beats_blas`: {'yes' if r.get('onednn_beats_blas') else 'no'} here), `ConditionedHead` "
        "takes oneDNN for the modulations always and for the width products from `ONEDNN_MIN_ROWS` rows; "
        "elsewhere MKL's `addmm` throughout.",
        "",
        f"Modulations of a batch-32 group ({t['levels']} levels x {t['rows']} rows, oneDNN): one table product "
        f"{t['table_us'] / 1e3:.2f} ms ({t['table_gflops']:.0f} GFLOP/s) against {t['levels']} per-level products "
        f"{t['per_level_us'] / 1e3:.2f} ms ({t['per_level_gflops']:.0f} GFLOP/s).",
        "",
        f"A batch-1 head step (`ConditionedHead.run`, {s['rows']} rows): {s['run_us']:.1f} µs, of which its "
        f"{s['products_per_step']} products at {s['addmm_6_rows_us']:.1f} µs each (MKL `addmm`, {s['rows']} rows) "
        f"are about {s['products_share']:.0%}. MAR at batch 1 makes 800 such steps.",
    ]
    c = r.get("condition")
    if c:
        lines += [
            "",
            f"A batch-1 group's `condition` ({c['rows']} rows, {c['levels']} levels, MKL's path): "
            f"{c['reused_us']:.0f} µs on the PreparedHead a sampler keeps (transposed weight and table memory made "
            f"once) against {c['fresh_us']:.0f} µs with both made anew (a fresh PreparedHead's layout time, "
            f"{c['layout_us']:.0f} µs, subtracted).",
        ]
    g = r.get("group")
    if g is None:
        lines += ["", "The fused head loop could not be built here (no C compiler), so it is not timed."]
    else:
        lines += [
            "",
            f"A batch-1 group's whole sampler ({g['steps']} DDPM steps with guidance, {g['rows']} rows): step by step "
            f"in PyTorch {g['torch_us'] / 1e3:.2f} ms, the fused C loop (`models/head_loop.py`, same noise) "
            f"{g['fused_us'] / 1e3:.2f} ms, **{g['speedup']:.1f}x**; largest difference {g['max_abs_diff']:.1e} "
            "(the two sum in different orders).",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="two row counts, 2 repeats, few calls")
    p.add_argument("--out", type=Path, default=RESULTS / "mar_head.json")
    args = p.parse_args(argv)
    if not onednn_available():
        raise SystemExit("this PyTorch build has no oneDNN inner product to compare with")
    torch.set_num_threads(args.threads)
    rows, calls, repeats = ([6, 192], 20, 2) if args.quick else ([6, 12, 64, 128, 192, 384], 2000, args.repeats)
    width, depth = 128, 3
    mod = 3 * width * depth + 2 * width
    with torch.inference_mode():
        result = {
            "benchmark": "mar_head",
            "machine": cpu_model(),
            "onednn_beats_blas": beats_blas(),
            "threads": args.threads,
            "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "repeats": repeats,
            "width": width,
            "mod": mod,
            "products": products(rows, width, mod, calls, repeats),
            "table": table(50, 192, width, mod, repeats),
        }
    result["step"] = step(width, depth, calls, repeats)
    result["group"] = group(width, depth, max(2, calls // 100), repeats)
    result["condition"] = condition(width, depth, max(2, calls // 100), repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
