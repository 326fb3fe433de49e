"""Forward + backward throughput of each layer kind against a dense layer with the same active parameters.

One process times, on the same random tokens (half text, half image modality):

- ``dense``: the SwiGLU FFN of width ``hidden``;
- ``moe``: top-k of E routed SwiGLU experts of width ``hidden / k`` (``MoEFeedForward``: tokens sorted by
  expert, each expert on its contiguous slice);
- ``modality-moe``: the same experts in a text half and an image half (MoMa routing);
- ``moe, autograd ops``: the ``moe`` layer (same weights) with its experts as autograd's per-expert ops instead of
  the in-place expert stage (``nn/expert_stage.py``): the control for that stage;
- ``naive-moe``: the same routed layer computed the slow way, a Python loop over tokens and their experts
  (the reference the MoE tests compare against; timed on a subset of tokens and scaled);
- ``dense-block`` / ``moe-block`` / ``mot-block``: whole pre-norm blocks (attention + FFN) for context, built
  by the layer kinds' factories (``unimm.settings.LAYERS``);
- group ``ffn, oneDNN``: the three FFNs again with their products through oneDNN (``train.matmul = "onednn"``),
  each against the dense FFN on oneDNN.

Each row reports tokens/s of forward + backward (median over repeats) and its speed relative to the dense row of
its group: the layers of a group take turns, repeat by repeat, and the ratio is the median of the per-repeat
ratios, so that the shared machine's drift during the bench cancels.
Results go to ``bench/results/moe.json`` and ``bench/results/moe.md``.
Run ``python bench/moe.py`` (defaults: dim 256, hidden 688, 8 experts, top-2, 2048 tokens) or ``--quick``.
"""

import argparse
import datetime
import json
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from unimm.nn import expert_stage
from unimm.nn.backbone import BackboneConfig
from unimm.nn.expert_stage import ExpertStage
from unimm.nn.mlp import SwiGLU
from unimm.nn.moe import MoEFeedForward
from unimm.nn.onednn_linear import available as onednn_available
from unimm.nn.onednn_linear import onednn_linears
from unimm.nn.rope import RotaryEmbedding
from unimm.settings import LAYERS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--hidden", type=int, default=688, help="dense SwiGLU width; experts get hidden / top_k")
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--naive-tokens", type=int, default=128, help="tokens the naive loop is timed on")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=25)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.dim, args.hidden, args.experts, args.heads, args.batch, args.seq = 32, 64, 4, 2, 2, 16
        args.naive_tokens, args.warmup, args.repeats = 8, 0, 1
    return args


def naive_moe(layer: MoEFeedForward, x: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
    """Token by token: route, then run each chosen expert on that one token (differentiable)."""
    group = modality.clamp(0, layer.allowed.shape[0] - 1) if layer.groups is not None else torch.zeros_like(modality)
    _, _, top_e, gates = layer.route(x, group)
    rows = []
    for t in range(x.shape[0]):
        y = x.new_zeros(x.shape[1])
        for j in range(top_e.shape[1]):
            y = y + gates[t, j] * layer.expert(int(top_e[t, j]), x[t : t + 1])[0]
        rows.append(y)
    return torch.stack(rows)


def time_fwd_bwd(fn: Callable[[], torch.Tensor], params: list[nn.Parameter], warmup: int, repeats: int) -> float:
    """Median seconds of one forward + backward."""
    return statistics.median(time_alternating({"fn": (fn, params)}, warmup, repeats)["fn"])


def time_alternating(runs: dict[str, tuple[Callable[[], torch.Tensor], list]], warmup: int, repeats: int) -> dict:
    """Seconds of each repeat of one forward + backward of each (fn, params) -> {name: [s, ...]}, the runs taking
    turns repeat by repeat, so that the machine's drift during the bench falls on all of them alike."""
    times: dict = {name: [] for name in runs}
    for i in range(warmup + repeats):
        for name, (fn, params) in runs.items():
            for p in params:
                p.grad = None
            t0 = time.perf_counter()
            fn().float().square().mean().backward()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def paired_ratio(base: list[float], times: list[float]) -> float:
    """Median over repeats of base / time, each pair timed back to back: the speed relative to the base run with
    the drift between repeats cancelled (a ratio of medians would mix repeats minutes apart)."""
    return statistics.median(b / t for b, t in zip(base, times, strict=True))


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d, h, e, k = args.dim, args.hidden, args.experts, args.top_k
    n = args.batch * args.seq
    x = torch.randn(args.batch, args.seq, d, requires_grad=True)
    modality = (torch.arange(args.seq) >= args.seq // 2).long().expand(args.batch, -1).contiguous()
    groups = [list(range(e // 2)), list(range(e // 2, e))]
    ffns: dict[str, nn.Module] = {
        "dense": SwiGLU(d, h),
        "moe": MoEFeedForward(d, h // k, e, k),
        "modality-moe": MoEFeedForward(d, h // k, e, k, groups=groups),
        "moe, autograd ops": MoEFeedForward(d, h // k, e, k, in_place=False),
    }
    ffns["moe, autograd ops"].load_state_dict(ffns["moe"].state_dict())  # the same layer on autograd's path
    rows = []
    groups = {
        "ffn": {
            name: (lambda layer=layer: layer(x, modality)[0], [*layer.parameters(), x]) for name, layer in ffns.items()
        }
    }
    if onednn_available():  # the same layers with their products on oneDNN (train.matmul = "onednn")

        def on_onednn(layer: nn.Module) -> torch.Tensor:
            with onednn_linears():
                return layer(x, modality)[0]

        groups["ffn, oneDNN"] = {
            name: (lambda layer=layer: on_onednn(layer), [*layer.parameters(), x]) for name, layer in ffns.items()
        }
    for group, runs in groups.items():  # one group at a time: a oneDNN run in between changes the BLAS timings
        for name, ts in time_alternating(runs, args.warmup, args.repeats).items():
            rows.append({"group": group, "layer": name, "s": statistics.median(ts), "times": ts})
    moe = ffns["moe"]
    flat, flat_mod = (
        x.detach().reshape(-1, d)[: args.naive_tokens].requires_grad_(),
        modality.reshape(-1)[: args.naive_tokens],
    )
    s = time_fwd_bwd(
        lambda: naive_moe(moe, flat, flat_mod),
        [*moe.parameters(), flat],
        min(args.warmup, 1),
        max(1, args.repeats // 5),
    )
    rows.append(
        {"group": "ffn", "layer": "naive-moe", "s": s * n / args.naive_tokens, "timed_tokens": args.naive_tokens}
    )

    rope = RotaryEmbedding(d // args.heads)(torch.arange(args.seq).expand(args.batch, 3, -1))
    cfg = BackboneConfig(dim=d, heads=args.heads, kv_heads=args.heads, hidden_dim=h)
    sections = {
        "dense-block": {"kind": "dense"},
        "moe-block": {"kind": "moe", "experts": e, "top_k": k},  # experts of width h // k, as above
        "mot-block": {"kind": "mot"},
    }
    blocks = {name: LAYERS.build(LAYERS.validate(sec, "layers"))(cfg, 0) for name, sec in sections.items()}
    runs = {
        name: (lambda block=block: block(x, modality, None, rope)[0], [*block.parameters(), x])
        for name, block in blocks.items()
    }
    for name, ts in time_alternating(runs, args.warmup, args.repeats).items():
        rows.append({"group": "block", "layer": name, "s": statistics.median(ts), "times": ts})

    breakdown = moe_breakdown(ffns["moe"], x.detach(), args.warmup, args.repeats)
    breakdown["products_only"] = products_only(ffns["dense"], ffns["moe"], breakdown["expert_counts"], args)

    order = ["ffn", "ffn, oneDNN", "block"]
    rows.sort(key=lambda r: order.index(r["group"]))  # stable: each group in the order its layers were listed
    base = {r["group"]: r for r in rows if r["layer"] in ("dense", "dense-block")}
    for r in rows:
        dense = base[r["group"]]
        if "times" in r:  # timed in turns with its group's dense layer: the paired ratio
            r["vs_dense"] = round(paired_ratio(dense["times"], r["times"]), 3)
        else:  # naive-moe, timed apart on a subset of the tokens
            r["vs_dense"] = round(dense["s"] / r["s"], 3)
        r["tokens_per_s"] = round(n / r["s"], 1)
    stage = {}  # the in-place expert stage against autograd's ops on the same layer, paired repeat by repeat
    for group in ("ffn", "ffn, oneDNN"):
        by_name = {r["layer"]: r for r in rows if r["group"] == group}
        if "moe" in by_name and "moe, autograd ops" in by_name:
            pairs = zip(by_name["moe, autograd ops"]["times"], by_name["moe"]["times"], strict=True)
            ratios = sorted(a / b for a, b in pairs)
            stage[group] = {
                name: round(ratios[round(f * (len(ratios) - 1))], 3)
                for name, f in (("median", 0.5), ("q10", 0.1), ("q90", 0.9))
            }
    same = same_results(ffns["moe"], ffns["moe, autograd ops"], x.detach(), modality)
    for r in rows:
        r["ms"] = round(r.pop("s") * 1000, 3)
        r.pop("times", None)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "config": {
            "dim": d,
            "dense_hidden": h,
            "experts": e,
            "top_k": k,
            "expert_hidden": h // k,
            "tokens": n,
            "heads": args.heads,
        },
        "table": rows,
        "moe_breakdown": breakdown,
        "stage_vs_autograd": stage,
        "stage_same_results": same,
    }


def same_results(stage: MoEFeedForward, control: MoEFeedForward, x: torch.Tensor, modality: torch.Tensor) -> dict:
    """Whether the in-place stage and autograd's ops give the same output and gradients (input and every parameter,
    the auxiliary losses included) on the bench's tokens, on BLAS and on oneDNN: bit for bit, and the largest
    difference."""
    out = {}
    for library, context in (("blas", nullcontext), ("onednn", onednn_linears)):
        if library == "onednn" and not onednn_available():
            continue
        results = []
        for layer in (stage, control):
            layer.zero_grad()
            xi = x.clone().requires_grad_()
            with context():
                y, aux = layer(xi, modality)
            (y.square().mean() + sum(aux.values())).backward()
            results.append([y.detach(), xi.grad, *(p.grad for p in layer.parameters())])
        pairs = list(zip(*results, strict=True))
        out[library] = {
            "bitwise": all(torch.equal(a, b) for a, b in pairs),
            "max_abs_diff": max(float((a - b).abs().max()) for a, b in pairs),
        }
    return out


def products_only(dense: SwiGLU, moe: MoEFeedForward, counts: list[int], args: argparse.Namespace) -> dict:
    """The six matrix products of one forward + backward and nothing else, the dense layer's in the layouts autograd
    gives ``nn.Linear`` and the experts' as the in-place stage runs them (on the measured counts), taking turns
    repeat by repeat: the ceiling of the routed layer's ratio on this CPU's BLAS, whatever the other ops cost."""
    t, d = sum(counts) // moe.top_k, moe.dim
    w_gu, w_d = dense.gate_up_proj.weight.detach(), dense.down_proj.weight.detach()  # [2h, d], [d, h]
    x, a, g = torch.randn(t, d), torch.randn(t, w_d.shape[1]), torch.randn(t, d)
    gh = torch.randn(t, w_gu.shape[0])

    def dense_products() -> None:
        x @ w_gu.t(), a @ w_d.t()  # forward
        g @ w_d, g.t() @ a, gh @ w_gu, gh.t() @ x  # input and weight gradients

    egu, ed = moe.w_gate_up.detach(), moe.w_down.detach()  # [E, d, 2h'], [E, h', d]
    xe = [torch.randn(n, d) for n in counts]
    ae = [torch.randn(n, ed.shape[1]) for n in counts]
    ge = [torch.randn(n, d) for n in counts]
    ghe = [torch.randn(n, egu.shape[2]) for n in counts]

    def expert_products() -> None:
        for e in range(len(counts)):
            xe[e] @ egu[e], ae[e] @ ed[e]
            ge[e] @ ed[e].t(), ae[e].t() @ ge[e], ghe[e] @ egu[e].t(), xe[e].t() @ ghe[e]

    times: dict = {"dense": [], "experts": []}
    for i in range(args.warmup + args.repeats):
        for name, fn in (("dense", dense_products), ("experts", expert_products)):
            t0 = time.perf_counter()
            fn()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    return {
        "dense_ms": round(statistics.median(times["dense"]) * 1000, 3),
        "experts_ms": round(statistics.median(times["experts"]) * 1000, 3),
        "vs_dense": round(paired_ratio(times["dense"], times["experts"]), 3),
    }


def moe_breakdown(layer: MoEFeedForward, x: torch.Tensor, warmup: int, repeats: int) -> dict:
    """The routed FFN's forward + backward cut into its stages, each timed alone on the layer's own routing of
    ``x``: routing (router, softmax, top-k, the balancing and z-losses), permutation (sort, gather into the expert
    buffer, weighted scatter back), the experts' products on the measured counts, and the same products on
    perfectly balanced counts (their difference: the cost of imbalance). The experts run as the layer runs them:
    on CPU fp32 its in-place stage (``nn/expert_stage.py``), there fed tokens already in the experts' order, so that
    its gather and scatter are plain copies (counted in both stages). Milliseconds per step."""
    flat = x.reshape(-1, layer.dim)
    t, k, e = flat.shape[0], layer.top_k, layer.num_experts
    group = torch.zeros(t, dtype=torch.long)
    with torch.no_grad():
        _, _, top_e, gates = layer.route(flat, group)
    counts = torch.bincount(top_e.t().reshape(-1), minlength=e).tolist()
    balanced = [t * k // e] * e
    src = flat.clone().requires_grad_()
    params = [*layer.parameters(), src]

    def routing() -> torch.Tensor:
        logits, probs, _, g = layer.route(src, group)
        aux = (probs.mean(0) * probs.mean(0)).sum() + torch.logsumexp(logits, -1).pow(2).mean()
        return g.sum() + aux

    order = top_e.t().reshape(-1).argsort(stable=True)
    tok = torch.arange(t).repeat(k)[order]
    gate = gates.t().reshape(-1)[order]

    def permutation() -> torch.Tensor:
        buf = src.index_select(0, tok)  # as the layer gathers; the experts' work replaced by the identity
        return src.new_zeros(t, layer.dim).index_add_(0, tok, buf * gate[:, None])

    def experts(sizes: list[int]):
        buf = flat[:1].expand(sum(sizes), -1).clone().requires_grad_()
        weights = (layer.w_gate_up.unbind(0), layer.w_down.unbind(0))
        ones, rows = torch.ones(sum(sizes)), torch.arange(sum(sizes))

        def run() -> torch.Tensor:  # the layer's own path, on tokens already in the experts' order
            if expert_stage.eligible(buf, layer.w_gate_up, layer.w_down):
                return ExpertStage.apply(buf, layer.w_gate_up, layer.w_down, ones, rows, sizes, False)
            outs = [layer.expert(i, c, weights) for i, c in enumerate(buf.split(sizes)) if c.shape[0] > 0]
            return torch.cat(outs)

        return run, [*layer.parameters(), buf]

    total = time_fwd_bwd(lambda: layer(src.view(x.shape), None)[0], params, warmup, repeats)  # grads to x too
    run_measured, p_measured = experts(counts)
    run_balanced, p_balanced = experts(balanced)
    parts = {
        "routing": time_fwd_bwd(routing, params, warmup, repeats),
        "permutation": time_fwd_bwd(permutation, params, warmup, repeats),
        "experts (balanced counts)": time_fwd_bwd(run_balanced, p_balanced, warmup, repeats),
    }
    parts["imbalance"] = time_fwd_bwd(run_measured, p_measured, warmup, repeats) - parts["experts (balanced counts)"]
    parts["rest (statistics, Python)"] = total - sum(parts.values())
    return {
        "total_ms": round(total * 1000, 3),
        "expert_counts": counts,
        "parts_ms": {name: round(v * 1000, 3) for name, v in parts.items()},
    }


def markdown(result: dict) -> str:
    c = result["config"]
    lines = [
        "# Layer kinds: forward + backward throughput at equal active parameters",
        "",
        f"{result['date']} · {result['cpu']} · {result['threads']} threads · torch {result['torch']}",
        "",
        f"dim {c['dim']}, {c['tokens']} tokens (half text, half image); dense SwiGLU width {c['dense_hidden']}; "
        f"MoE: top-{c['top_k']} of {c['experts']} experts of width {c['expert_hidden']} (same active FFN parameters).",
        "",
        "| group | layer | ms / step | tokens/s | vs dense |",
        "|---|---|---:|---:|---:|",
    ]
    for r in result["table"]:
        lines.append(
            f"| {r['group']} | {r['layer']} | {r['ms']:.2f} | {r['tokens_per_s']:,.0f} | {r['vs_dense']:.2f}× |"
        )
    lines += [
        "",
        "`naive-moe` is timed on a subset of tokens and scaled to the full count. The layers of a group take turns "
        "repeat by repeat; *vs dense* is the median of the per-repeat ratios (the naive loop's: of the medians).",
    ]
    for library, q in result.get("stage_same_results", {}).items():
        lines += [
            "",
            f"On {library}, the stage and autograd's ops give "
            + ("the same output and gradients bit for bit" if q["bitwise"] else "output and gradients that differ")
            + f" on these tokens (largest difference {q['max_abs_diff']:.1e}).",
        ]
    for group, q in result.get("stage_vs_autograd", {}).items():
        lines += [
            "",
            f"In group *{group}* the routed layer with its in-place expert stage runs at {q['median']:.2f}× the speed "
            f"of the same layer on autograd's per-expert ops (median of the per-repeat ratios, 10-90 % "
            f"{q['q10']:.2f}-{q['q90']:.2f}×).",
        ]
    b = result.get("moe_breakdown")
    if b:
        dense = next(r["ms"] for r in result["table"] if r["layer"] == "dense" and r["group"] == "ffn")
        lines += [
            "",
            f"## Where the routed FFN's time goes (no modality groups; {b['total_ms']:.2f} ms per step, dense "
            f"{dense:.2f} ms)",
            "",
            f"Each stage timed alone, forward + backward, on the layer's own routing (tokens per expert "
            f"{b['expert_counts']}); *imbalance* is the experts' products on these counts minus the same on equal "
            "counts, *rest* the total minus the stages (routing statistics, Python); it comes out negative when a "
            "stage timed alone runs slower than inside the layer, within this shared CPU's run-to-run noise of about "
            "10 %.",
            "",
            "| stage | ms / step | share |",
            "|---|---:|---:|",
        ]
        for name, ms in b["parts_ms"].items():
            lines.append(f"| {name} | {ms:.2f} | {ms / b['total_ms']:.0%} |")
        po = b.get("products_only")
        if po:
            lines += [
                "",
                f"The six matrix products of a forward + backward alone, in the layouts each layer runs them, taking "
                f"turns: dense {po['dense_ms']:.2f} ms, experts {po['experts_ms']:.2f} ms on the counts above, "
                f"**{po['vs_dense']:.2f}×** (median of the per-repeat ratios): the ceiling of the routed layer's ratio "
                "on this CPU's BLAS, whatever the routing, permutation and elementwise ops cost.",
            ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "moe.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "moe.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
