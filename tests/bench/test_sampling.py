"""bench/sampling.py --quick: passes counted per sampler (one batched pass per guided step), times split."""

import importlib.util
import sys
from pathlib import Path

from unimm.models import head_loop

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "sampling.py"


def _bench(monkeypatch, name: str):
    """bench/sampling.py loaded as a module."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    return bench


def test_quick_run_counts_one_pass_per_step_and_splits_the_time(tmp_path, monkeypatch):
    bench = _bench(monkeypatch, "bench_sampling")
    out = tmp_path / "sampling.json"
    result = bench.main(["--quick", "--threads", "1", "--out", str(out)])
    quick, chameleon = result["presets"]["quick"], result["presets"]["chameleon"]
    for p in (quick, chameleon):
        for row in p["batches"].values():
            assert 0 < row["transformer_s"] < row["total_s"] and row["over_transformer"] >= 1
            assert row["dit_passes"] == 0 and row["head_passes"] == 0  # neither has a DiT or an MLP head
    # flow with guidance: the conditional and unconditional rows share each step's pass
    assert quick["batches"]["1"]["passes"] == quick["steps"] and quick["cfg"] != 1
    # autoregressive codes with a KV cache: the prompt's pass, then one per code after the first
    assert chameleon["batches"]["1"]["passes"] == 49
    table = out.with_suffix(".md").read_text()
    assert "| quick | latent | 20 |" in table and "| chameleon | ar-codes |" in table


def test_mar_head_steps_are_timed(tmp_path, monkeypatch):
    bench = _bench(monkeypatch, "bench_sampling_mar")
    out = tmp_path / "sampling.json"
    args = ["--presets", "mar", "--batch", "1", "2", "--repeats", "1", "--threads", "1", "--out", str(out)]
    result = bench.main(args)
    mar = result["presets"]["mar"]
    for row in mar["batches"].values():
        # timed apart from the transformer's passes: one fused loop per group where the C loop is built (these
        # groups have a few rows), else one call per group and head step
        calls = 1 if head_loop.available() else 50
        assert row["head_passes"] == mar["steps"] * calls and row["passes"] == mar["steps"]
        assert 0 < row["head_s"] < row["total_s"] - row["transformer_s"]
