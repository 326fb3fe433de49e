"""Do the distribution metrics' bootstrap intervals cover what they claim, and is 200 resamples enough?

On MNIST (``data/mnist``: 8,000 training digits) with the 64-d features of the FID feature classifier (as the
harness trains it, into ``--cache``), two "generators" are simulated with real training digits, so that
their truth can be measured: ``same`` draws from the data's own distribution, ``no sevens`` from the digits
without the sevens (a dropped mode). "Real" sets come from the first 4,000 training digits, "generated" sets
from the other 4,000, ``--n`` of each, drawn without replacement.

1. **Truth**: FID, KID, precision and recall over ``--truth`` independent draws: their mean (what the metric
   estimates at this sample size, bias included) and the 2.5-97.5 % range of the estimates.
2. **Coverage**: for ``--draws`` further draws, the harness's bootstrap (``eval.distribution.bootstrap``, 200
   resamples of both sets) gives the raw percentile interval and the median-corrected one that eval.json
   reports (``eval.distribution.interval``): how often each contains the truth's mean, and its mean width.
3. **Resamples**: one draw's median-corrected interval under 10 bootstrap seeds, at 200 and at 1,000
   resamples: the seed-to-seed standard deviation of each end, as a share of the interval's width.

The pools are finite (each draw takes a quarter of its pool), so the truth's spread is about 13 % narrower
than an infinite population's: coverage here is slightly optimistic about narrow intervals. Results go to
``bench/results/bootstrap_calibration.json`` and ``.md``. Run ``python bench/bootstrap_calibration.py``
(``--quick`` for a smoke run).
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
from unimm.eval.classifier import FEATURE_DIM, load_or_train_classifier
from unimm.eval.distribution import INTERVALS, FeatureExtractor, bootstrap, extract_features, interval

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
METRICS = ("fid", "kid_mean", "precision", "recall")


def features(data: Path, cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The feature classifier's features of every training digit and their labels."""
    clf, _ = load_or_train_classifier(data, "train", cache_dir=cache / "classifiers", bottleneck=FEATURE_DIM)
    train = load_split(data, "train")
    return extract_features(FeatureExtractor(clf), train.images), train.labels


def pools(feats: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Scenario -> (real pool, generated pool)."""
    half = len(feats) // 2
    real, gen, gen_labels = feats[:half], feats[half:], labels[half:]
    return {"same": (real, gen), "no sevens": (real, gen[gen_labels != 7])}


def draw(pool: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    return pool[torch.randperm(len(pool), generator=gen)[:n]]


def truth(real: torch.Tensor, fake: torch.Tensor, n: int, draws: int, gen: torch.Generator) -> dict[str, dict]:
    """Mean and 2.5 / 97.5 % quantiles of each metric over independent draws."""
    values = [bootstrap(draw(real, n, gen), draw(fake, n, gen), reps=0)[0] for _ in range(draws)]
    out = {}
    for m in METRICS:
        v = torch.tensor([x[m] for x in values], dtype=torch.float64)
        out[m] = {"mean": float(v.mean()), "sd": float(v.std()), "q025": float(v.quantile(0.025)),
                  "q975": float(v.quantile(0.975))}  # fmt: skip
    return out


def coverage(real, fake, n: int, draws: int, reps: int, target: dict, gen: torch.Generator) -> dict[str, dict]:
    """Share of draws whose interval holds the truth's mean, and the mean width, per metric and interval kind."""
    hits = {(m, kind): [] for m in METRICS for kind in ("percentile", "corrected")}
    for i in range(draws):
        point, reps_ = bootstrap(draw(real, n, gen), draw(fake, n, gen), reps=reps, seed=i)
        for m in METRICS:
            _, low, high = INTERVALS[m]
            raw = reps_[m].quantile(torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
            for kind, (lo, hi) in (("percentile", raw), ("corrected", interval(point[m], reps_[m], 0.95, low, high))):
                hits[(m, kind)].append((lo <= target[m]["mean"] <= hi, hi - lo))
    return {f"{m} {kind}": {"coverage": sum(h for h, _ in v) / draws, "width": sum(w for _, w in v) / draws}
            for (m, kind), v in hits.items()}  # fmt: skip


def resample_error(real, fake, n: int, seeds: int, gen: torch.Generator) -> dict[str, dict]:
    """Seed-to-seed SD of the interval's ends over ``seeds`` bootstrap seeds, relative to its mean width."""
    a, b = draw(real, n, gen), draw(fake, n, gen)
    out = {}
    for reps in (200, 1000):
        ends = {m: [] for m in METRICS}
        t0 = time.perf_counter()
        for seed in range(seeds):
            point, reps_ = bootstrap(a, b, reps=reps, seed=seed)
            for m in METRICS:
                ends[m].append(interval(point[m], reps_[m], 0.95, *INTERVALS[m][1:]))
        seconds = (time.perf_counter() - t0) / seeds
        for m, e in ends.items():
            e = torch.tensor(e, dtype=torch.float64)
            width = float((e[:, 1] - e[:, 0]).mean())
            out[f"{m} {reps}"] = {"lo_sd_share": float(e[:, 0].std()) / width,
                                  "hi_sd_share": float(e[:, 1].std()) / width, "s_per_bootstrap": seconds}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mnist")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("UNIMM_CACHE", "~/.cache/unimm")).expanduser())
    ap.add_argument("--n", type=int, default=1000, help="images per set")
    ap.add_argument("--truth", type=int, default=100, help="independent draws behind the truth")
    ap.add_argument("--draws", type=int, default=40, help="draws whose intervals are checked")
    ap.add_argument("--seeds", type=int, default=10, help="bootstrap seeds for the resample error")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 per set, few draws")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.quick:
        args.n, args.truth, args.draws, args.seeds = 200, 10, 4, 2
    torch.set_num_threads(args.threads)
    load, t0 = os.getloadavg()[0], time.perf_counter()
    feats, labels = features(args.data, args.cache)
    gen = torch.Generator().manual_seed(0)
    scenarios = {}
    for name, (real, fake) in pools(feats, labels).items():
        target = truth(real, fake, args.n, args.truth, gen)
        scenarios[name] = {"truth": target, "coverage": coverage(real, fake, args.n, args.draws, 200, target, gen)}
        print(name, json.dumps(scenarios[name]), flush=True)
    real, fake = pools(feats, labels)["no sevens"]
    result = {
        "n": args.n, "truth_draws": args.truth, "checked_draws": args.draws, "feature_dim": feats.shape[1],
        "scenarios": scenarios, "resample_error": resample_error(real, fake, args.n, args.seeds, gen),
        "threads": args.threads, "torch": torch.__version__, "cpu": cpu_model(), "load_average": load,
        "wall_s": round(time.perf_counter() - t0, 1),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bootstrap_calibration.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "bootstrap_calibration.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    md = [
        f"# Bootstrap intervals of the distribution metrics: coverage on MNIST, {r['n']} images per set",
        "",
        f"{r['cpu']}, torch {r['torch']}, {r['threads']} thread(s), load average at start {r['load_average']:.2f}, "
        f"{r['date']}, {r['wall_s']:.0f} s. {r['feature_dim']}-d features; truth from {r['truth_draws']} "
        f"independent draws, intervals (200 resamples, 95 %) from {r['checked_draws']} more.",
        "",
        "| scenario | metric | truth mean | truth 95 % range | percentile: coverage, width | "
        "median-corrected: coverage, width |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, s in r["scenarios"].items():
        for m in METRICS:
            t, raw, cor = s["truth"][m], s["coverage"][f"{m} percentile"], s["coverage"][f"{m} corrected"]
            shown = [f"{c['coverage']:.0%}, {c['width']:.4g}" for c in (raw, cor)]
            cells = [name, m, f"{t['mean']:.4g}", f"{t['q975'] - t['q025']:.4g}", *shown]
            md.append("| " + " | ".join(cells) + " |")
    md += ["", "Resample error (`no sevens`, one draw, 10 bootstrap seeds): SD of each end of the interval as a "
           "share of its width.", "", "| metric | resamples | low end | high end | wall s per bootstrap (shared CPU) |",
           "|---|---:|---:|---:|---:|"]  # fmt: skip
    for key, e in r["resample_error"].items():
        m, reps = key.rsplit(" ", 1)
        md.append(f"| {m} | {reps} | {e['lo_sd_share']:.1%} | {e['hi_sd_share']:.1%} | {e['s_per_bootstrap']:.1f} |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
