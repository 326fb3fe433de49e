"""How an atlas sweep should use the cores: ``--jobs`` parallel runs x threads per job against one job with every
thread, on this machine (issue 17, "Performance of the sweep itself").

For each layout (jobs x threads = the machine's cores), ``jobs`` worker processes start together, each pricing
and timing real training steps of an atlas preset at the medium / quick atlas's tiny size
(``atlas.budget.measure_step_cost`` with ``timed=True``: forward + backward + AdamW on the run's own data
stream, the frozen encoder included). The sweep's rate is the sum over jobs of counted FLOPs per second, compared
with the fp32 matmul peak measured in the same script with every core. Evaluation, preparation and start-up are
not in it (the atlas report's sweep section measures the whole wall time).
Results: ``bench/results/sweep_jobs.json`` and ``.md``. Run ``python bench/sweep_jobs.py`` on an idle machine.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TINY = ["model.dim=96", "model.depth=3", "model.heads=4", "train.tensorboard=false"]
WORKER = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from unimm.atlas.budget import measure_step_cost
from unimm.config import load_config
cfg = load_config(sys.argv[2], json.loads(sys.argv[3]))
cost = measure_step_cost(cfg, steps=int(sys.argv[4]), timed=True)
print(json.dumps({"flops": cost.flops, "seconds": cost.seconds}))
"""


def layout(jobs: int, threads: int, preset: str, steps: int, matmul: str = "blas", size: tuple[str, ...] = ()) -> dict:
    """``jobs`` concurrent workers with ``threads`` threads each, their linear layers on ``matmul`` (the
    ``train.matmul`` setting): per-job step time and the summed FLOP/s. ``size``: overrides of the model's size
    after the tiny atlas size's."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    overrides = [*TINY, *size, f'train.matmul="{matmul}"']
    cmd = [sys.executable, "-c", WORKER, str(threads), preset, json.dumps(overrides), str(steps)]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for _ in range(jobs)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode:
            raise RuntimeError(f"a worker of {preset} failed: {err.strip().splitlines()[-1] if err.strip() else ''}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.perf_counter() - t0
    rate = sum(o["flops"] / o["seconds"] for o in outs) / 1e9
    return {"jobs": jobs, "threads_per_job": threads, "step_s": [o["seconds"] for o in outs],
            "step_gflop": outs[0]["flops"] / 1e9, "gflops": rate, "wall_s": round(wall, 1)}  # fmt: skip


def main() -> None:
    import torch

    from unimm.atlas.throughput import matmul_peak_gflops

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["configs/quick.toml", "configs/chameleon.toml"])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per worker (after a warm-up step)")
    ap.add_argument("--matmul", nargs="+", default=["blas", "onednn"], help="train.matmul settings to compare")
    ap.add_argument("--size", nargs=3, type=int, metavar=("DIM", "DEPTH", "HEADS"), default=None,
                    help="a model size instead of the atlas's tiny one (dim 96, depth 3, heads 4); its results go "
                    "to sweep_jobs_dim<DIM>.{json,md}")  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    keys = ("model.dim", "model.depth", "model.heads")
    size = () if args.size is None else tuple(f"{k}={v}" for k, v in zip(keys, args.size, strict=True))
    name = "sweep_jobs" if args.size is None else f"sweep_jobs_dim{args.size[0]}"
    what = "tiny atlas size" if args.size is None else "dim {}, depth {}, heads {}".format(*args.size)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    peak = max(matmul_peak_gflops(n) for n in (1024, 2048))  # the faster of torch's BLAS and oneDNN
    load = os.getloadavg()[0]
    layouts = [(j, cores // j) for j in range(1, cores + 1) if cores % j == 0]
    rows = []
    for preset in args.presets:
        for matmul in args.matmul:
            for jobs, threads in layouts:
                r = layout(jobs, threads, preset, args.steps, matmul, size)
                rows.append({"preset": Path(preset).stem, "matmul": matmul, **r, "share_of_peak": r["gflops"] / peak})
    for preset in {r["preset"] for r in rows}:  # against one job with every thread on torch's BLAS, the default
        base = next(r for r in rows if r["preset"] == preset and r["jobs"] == 1 and r["matmul"] == args.matmul[0])
        for r in rows:
            if r["preset"] == preset:
                r["vs_one_job"] = r["gflops"] / base["gflops"]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import cpu_model

    data = {"cpu": cpu_model(), "cores": cores, "matmul_peak_gflops": peak, "load_average_at_start": load,
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "size": list(size),
            "rows": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    md = [f"# Atlas sweep layout: jobs x threads per job on {cores} cores ({what}, training steps only)", "",
          f"{data['cpu']}: fp32 matmul peak {peak:.0f} GFLOP/s with {cores} threads (the faster of torch's BLAS and "
          f"oneDNN); load average at start {load:.2f}; torch {torch.__version__}; {data['date']}.", "",
          f"*matmul* is `train.matmul`; *vs one job* compares with one job of all {cores} threads on "
          f"{args.matmul[0]}.", "",
          "| preset | matmul | jobs x threads | step s (each job) | GFLOP/step | summed GFLOP/s | share of peak "
          "| vs one job |",
          "|---|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        steps = ", ".join(f"{x:.4f}" for x in r["step_s"])
        cells = [r["preset"], r["matmul"], f"{r['jobs']} x {r['threads_per_job']}", steps, f"{r['step_gflop']:.2f}",
                 f"{r['gflops']:.1f}", f"{r['share_of_peak']:.0%}", f"{r['vs_one_job']:.2f}x"]  # fmt: skip
        md.append("| " + " | ".join(cells) + " |")
    (args.out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
