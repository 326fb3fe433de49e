"""bench/sweep_jobs.py: concurrent workers each time real atlas training steps and the layout sums their FLOP/s."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "sweep_jobs.py"


@pytest.fixture
def bench(monkeypatch, digits_dir):
    """The bench script, its workers at a tiny size on the digits."""
    spec = importlib.util.spec_from_file_location("bench_sweep_jobs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    small = ["model.dim=32", "model.depth=1", "model.heads=2", "train.batch_size=4", "codec.hidden=8",
             f"data.path={str(digits_dir)!r}", "train.tensorboard=false"]  # fmt: skip
    monkeypatch.setattr(module, "TINY", small)
    return module


def test_two_one_thread_workers_each_time_their_steps_and_the_rates_add_up(bench):
    row = bench.layout(2, 1, "configs/quick.toml", steps=1)
    assert row["jobs"] == 2 and row["threads_per_job"] == 1 and len(row["step_s"]) == 2
    assert row["step_gflop"] > 0 and all(s > 0 for s in row["step_s"])
    assert row["gflops"] == pytest.approx(sum(row["step_gflop"] / s for s in row["step_s"]), rel=1e-9)


def test_a_layout_on_onednn_counts_the_same_flops(bench):
    """train.matmul reaches the workers (the setting is validated there) and FLOPs are counted alike."""
    blas = bench.layout(1, 1, "configs/quick.toml", steps=1)
    onednn = bench.layout(1, 1, "configs/quick.toml", steps=1, matmul="onednn")
    assert onednn["step_gflop"] == pytest.approx(blas["step_gflop"], rel=1e-9)
    with pytest.raises(RuntimeError, match="train.matmul"):  # the worker's config refuses it: so it got there
        bench.layout(1, 1, "configs/quick.toml", steps=1, matmul="nope")
