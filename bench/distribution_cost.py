"""What 1,000 generated images per evaluation cost (the ``atlas`` and ``quick`` suites' count, for FID / KID /
precision-recall and prompt accuracy), and what the bootstrap intervals add.

For three writer kinds at the quick atlas's tiny size (dim 96, depth 3, heads 4): a latent flow (transfusion,
``configs/quick.toml``), VQ codes read out autoregressively (``configs/chameleon.toml``) and masked
autoregression with a diffusion head (``configs/mar.toml``), each with its preset's sampler, steps and CFG.
The models are built as ``unimm train`` builds them, untrained (the cost does not depend on the weights), and
generate the ``atlas`` suite's prompts for the MNIST test split in its batches, with a seeded generator, as
``eval.harness.generation`` does. Then, once: the judge's feature pass over the generated and the real images
(an untrained judge of the same shape) and ``eval.distribution.distribution_metrics`` on those features, with
no resample and with the suite's 200.

Results go to ``bench/results/distribution_cost.json`` and ``.md``. Run ``python bench/distribution_cost.py``
(``--threads``, ``--data``, ``--count``; ``--quick`` for a smoke run on 20 images).
"""

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

from unimm.data import load_split
from unimm.eval.classifier import FEATURE_DIM, ImageClassifier
from unimm.eval.distribution import FeatureExtractor, distribution_metrics, extract_features
from unimm.eval.harness import generation_jobs
from unimm.eval.suites import SUITES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402
from untrained import untrained_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TINY = ["model.dim=96", "model.depth=3", "model.heads=4"]  # configs/atlas/quick.toml [sizes] tiny
PRESETS = {"quick": "transfusion: latent flow", "chameleon": "chameleon: VQ codes, AR", "mar": "mar: masked AR"}


def generate(preset: str, data: Path, count: int, batch_size: int) -> tuple[torch.Tensor, dict]:
    """The images for the first ``count`` atlas-suite prompts, and the seconds they took."""
    cfg, model = untrained_model(preset, data, TINY)
    test = load_split(data, "test", cfg.data.image_size, cfg.data.channels)
    prompts = [p for p, _ in generation_jobs(test, SUITES["atlas"])][:count]
    gen, chunks = torch.Generator().manual_seed(0), []
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            chunks.append(model.generate(prompts[i : i + batch_size], generator=gen))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = cfg.sample
    row = {"images": len(prompts), "generate_s": round(seconds, 1), "generate_cpu_s": round(cpu, 1),
           "cpu_s_per_image": round(cpu / len(prompts), 4), "sampler": s.sampler,
           "steps": None if s.sampler == "ar" else s.steps, "cfg": s.cfg}  # fmt: skip
    return torch.cat(chunks), row


def metrics_cost(real: torch.Tensor, fake: torch.Tensor, reps: int) -> dict:
    """Seconds of the judge's feature pass over both sets and of the metrics without and with ``reps`` resamples."""
    judge = FeatureExtractor(ImageClassifier(real.shape[1], real.shape[-1], 10, bottleneck=FEATURE_DIM))
    out: dict = {"n_real": len(real), "n_generated": len(fake), "reps": reps}
    steps = {
        "features": lambda: out.setdefault("feats", (extract_features(judge, real), extract_features(judge, fake))),
        "point": lambda: distribution_metrics(*out["feats"], reps=0),
        "bootstrap": lambda: distribution_metrics(*out["feats"], reps=reps),
    }
    for name, step in steps.items():
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        out[f"{name}_s"], out[f"{name}_cpu_s"] = round(time.perf_counter() - t0, 2), round(time.process_time() - c0, 2)
    out["feature_dim"] = out.pop("feats")[0].shape[1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mnist")
    ap.add_argument("--count", type=int, default=1000, help="images generated per preset")
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 images")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    count = 20 if args.quick else args.count
    torch.set_num_threads(args.threads)
    suite = SUITES["atlas"]
    result = {
        "suite": suite.name, "batch_size": suite.batch_size, "data": _shown(args.data), "threads": args.threads,
        "size": TINY, "generation": {}, "metrics": None, "torch": torch.__version__, "cpu": cpu_model(),
        "load_average": os.getloadavg()[0], "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    real = load_split(args.data, "test").images[: max(count, 1000)]
    for preset in args.presets:  # the results are written after each step: a long run keeps what it measured
        images, result["generation"][PRESETS[preset]] = generate(preset, args.data, count, suite.batch_size)
        if result["metrics"] is None:
            result["metrics"] = metrics_cost(real, images, suite.bootstrap_reps)
        write(result, args.out)
    print(markdown(result))


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def write(result: dict, out: Path) -> None:
    result["load_average_end"] = os.getloadavg()[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "distribution_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "distribution_cost.md").write_text(markdown(result))
    print(json.dumps(result["generation"]), json.dumps(result["metrics"]), flush=True)


def markdown(r: dict) -> str:
    c = r["metrics"]
    return "\n".join([
        f"# 1,000 generated images per evaluation: suite `{r['suite']}` (batch {r['batch_size']}), "
        f"{r['threads']} thread(s)",
        "",
        f"{r['cpu']}, torch {r['torch']}, load average {r['load_average']:.2f} at start and "
        f"{r['load_average_end']:.2f} at the end, {r['date']}. Untrained models at the quick atlas's tiny size "
        f"({', '.join(r['size'])}). The CPU was shared with other jobs: wall seconds are upper bounds; CPU seconds "
        "(the process's own time, one thread) are close to what an idle core takes.",
        "",
        "| writer | sampler (steps, CFG) | images | wall s | CPU s | CPU s per image |",
        "|---|---|---:|---:|---:|---:|",
        *[f"| {k} | {g['sampler']} ({g['steps'] or '–'}, {g['cfg']}) | {g['images']} | {g['generate_s']} | "
          f"{g['generate_cpu_s']} | {g['cpu_s_per_image']} |" for k, g in r["generation"].items()],
        "",
        f"Distribution metrics on {c['n_generated']} generated and {c['n_real']} real images ({c['feature_dim']}-d "
        f"features), wall / CPU seconds: feature pass {c['features_s']} / {c['features_cpu_s']}, point "
        f"estimates {c['point_s']} / {c['point_cpu_s']}, with {c['reps']} bootstrap resamples {c['bootstrap_s']} / "
        f"{c['bootstrap_cpu_s']}.",
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
