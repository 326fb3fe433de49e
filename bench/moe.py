"""Forward + backward throughput of each layer kind against a dense layer with the same active parameters.

One process times, on the same random tokens (half text, half image modality):

- ``dense``: the SwiGLU FFN of width ``hidden``;
- ``moe``: top-k of E routed SwiGLU experts of width ``hidden / k`` (``MoEFeedForward``: tokens sorted by
  expert, each expert on its contiguous slice);
- ``modality-moe``: the same experts in a text half and an image half (MoMa routing);
- ``naive-moe``: the same routed layer computed the slow way, a Python loop over tokens and their experts
  (the reference the MoE tests compare against; timed on a subset of tokens and scaled);
- ``dense-block`` / ``moe-block`` / ``mot-block``: whole pre-norm blocks (attention + FFN) for context, built
  by the layer kinds' factories (``unimm.settings.LAYERS``).

Each row reports tokens/s of forward + backward and its ratio to the dense row of its group.
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
from pathlib import Path

import torch
from torch import nn

from unimm.nn.backbone import BackboneConfig
from unimm.nn.mlp import SwiGLU
from unimm.nn.moe import MoEFeedForward
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
    p.add_argument("--repeats", type=int, default=10)
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
    times = []
    for i in range(warmup + repeats):
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        fn().float().square().mean().backward()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


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
    }
    rows = []
    for name, layer in ffns.items():
        fn = lambda layer=layer: layer(x, modality)[0]  # noqa: E731
        rows.append(
            {"group": "ffn", "layer": name, "s": time_fwd_bwd(fn, [*layer.parameters(), x], args.warmup, args.repeats)}
        )
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
    for name, block in blocks.items():
        fn = lambda block=block: block(x, modality, None, rope)[0]  # noqa: E731
        rows.append(
            {
                "group": "block",
                "layer": name,
                "s": time_fwd_bwd(fn, [*block.parameters(), x], args.warmup, args.repeats),
            }
        )

    base = {
        "ffn": next(r["s"] for r in rows if r["layer"] == "dense"),
        "block": next(r["s"] for r in rows if r["layer"] == "dense-block"),
    }
    for r in rows:
        r["tokens_per_s"] = round(n / r["s"], 1)
        r["vs_dense"] = round(base[r["group"]] / r["s"], 3)
        r["ms"] = round(r.pop("s") * 1000, 3)
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
    lines += ["", "`naive-moe` is timed on a subset of tokens and scaled to the full count."]
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
