"""How well a sweep used the machine, and what its cooldown branches saved.

The runner keeps ``OUT/sweep.json``: one entry per invocation (``unimm atlas ...`` started, stopped, resumed)
with its wall-clock span, jobs, threads per job and the fp32 matmul peak measured at its start with every core.
The sweep's *achieved* rate is the FLOPs its runs computed (each run's ledger: preparation, frozen encoders and
training steps; a cooldown branch only its ``own`` part, the rest being its stable run's) over the sessions'
summed wall time, which also holds what no ledger counts: evaluation, evaluator and tokenizer fits, start-up
and idle cores. *Dedicated* is what the same runs would have computed as runs of their own (every branch from
step 0): the branching saved ``1 - computed / dedicated``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from unimm.nn.onednn_linear import available as onednn_available


def matmul_peak_gflops(n: int = 1024, repeats: int = 5, library: str = "best") -> float:
    """Best-of-``repeats`` fp32 ``n x n`` product rate of this process's threads, in GFLOP/s: with torch's BLAS
    (``blas``: ``torch.mm``, MKL), with oneDNN's inner product (``onednn``), or the faster of the two (``best``,
    the rate this machine reaches: on an AMD CPU MKL runs AVX2 code and oneDNN, with AVX-512, about twice as
    fast; ``bench/results/decode.md``)."""
    if library == "best":
        libraries = ["blas", "onednn"] if onednn_available() else ["blas"]
        return max(matmul_peak_gflops(n, repeats, lib) for lib in libraries)
    a, b = torch.randn(n, n), torch.randn(n, n)
    if library == "blas":
        c = torch.empty(n, n)

        def product() -> None:
            torch.mm(a, b, out=c)
    elif library == "onednn":
        packed = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), batch_size=n)

        def product() -> None:
            torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")
    else:
        raise ValueError(f"library {library!r}: expected blas, onednn or best")
    product()  # warm the kernel and the caches
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


LOADED = 0.5  # a load average at a session's start above this: other work shared the cores the peak was measured on


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _computed(ledger: dict[str, Any]) -> tuple[float, float] | None:
    """(FLOPs this run computed itself, FLOPs of the same run trained alone) from its ``ledger.json``."""
    total = ledger.get("total")
    if total is None:
        return None
    fork = ledger.get("fork")
    own = fork.get("own") if fork else total
    return (float(own), float(total)) if own is not None else None


def sweep_summary(out: Path, folders: list[Path]) -> dict[str, Any] | None:
    """The sweep's wall time, computed FLOPs, achieved rate against the measured peak and branching savings,
    over the run ``folders`` that have a ledger and finished in a session ``sweep.json`` recorded (a run finished
    before the file existed has no wall time to set against); None without ``sweep.json``."""
    path = out / "sweep.json"
    if not path.is_file():
        return None
    sessions = json.loads(path.read_text())["sessions"]
    wall = sum(max(0.0, s["end"] - s["start"]) for s in sessions)
    finished = {name for s in sessions for name in s["finished"]}
    computed = dedicated = 0.0
    counted = 0
    for folder in (f for f in folders if f.name in finished):
        ledger = folder / "ledger.json"
        pair = _computed(json.loads(ledger.read_text())) if ledger.is_file() else None
        if pair is not None:
            computed, dedicated, counted = computed + pair[0], dedicated + pair[1], counted + 1
    peaks = [s["matmul_peak_gflops"] for s in sessions if s.get("matmul_peak_gflops")]
    peak = statistics.fmean(peaks) if peaks else None
    rate = computed / wall / 1e9 if wall > 0 else None
    return {
        "sessions": len(sessions),
        "wall_s": round(wall, 1),
        "runs_counted": counted,
        "computed_flops": computed,
        "dedicated_flops": dedicated,
        "branching_saves": 1 - computed / dedicated if dedicated else None,
        "achieved_gflops": rate,
        "matmul_peak_gflops": peak,
        "share_of_peak": rate / peak if rate is not None and peak else None,
        "jobs": sorted({s["jobs"] for s in sessions}),
        "threads_per_job": sorted({s["threads_per_job"] or 0 for s in sessions}),
        "load_at_start": [s.get("load_at_start") for s in sessions],
    }


def summary_text(s: dict[str, Any]) -> str:
    """The report's paragraph on the sweep itself."""
    hours = s["wall_s"] / 3600
    text = (f"The sweep ran {hours:.2f} h of wall time over {s['sessions']} invocation(s) (jobs {s['jobs']}, "
            f"threads per job {s['threads_per_job']}); its {s['runs_counted']} runs computed "
            f"{s['computed_flops']:.3g} counted FLOPs (preparation, frozen encoders and training steps; a cooldown "
            "branch only its own part).")  # fmt: skip
    if s["achieved_gflops"] is not None and s["matmul_peak_gflops"]:
        text += (f" That is {s['achieved_gflops']:.1f} GFLOP/s over the whole wall time, {s['share_of_peak']:.0%} "
                 f"of the fp32 matmul peak measured at each start ({s['matmul_peak_gflops']:.0f} GFLOP/s); the "
                 "wall time also holds evaluation, evaluator and tokenizer fits and start-up, which no ledger "
                 "counts.")  # fmt: skip
        loads = [x for x in s.get("load_at_start", []) if x is not None]
        if loads and max(loads) > LOADED:
            text += (f" The machine carried other work when a peak was measured (load average up to "
                     f"{max(loads):.2f} at a start), so the peak reads low and the share high.")  # fmt: skip
        elif s["share_of_peak"] > 1:
            text += (" More than the peak is impossible: other work on the machine disturbed the peak measured at a "
                     "start (the sessions predate the recorded load), so this share means nothing.")  # fmt: skip
    if s["branching_saves"]:
        text += (f" Trained as runs of their own, the same runs would have computed {s['dedicated_flops']:.3g} "
                 f"FLOPs: the cooldown branches saved {s['branching_saves']:.0%}.")  # fmt: skip
    return text
