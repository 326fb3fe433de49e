"""bench/train_step.py --quick: both libraries' peaks, the oneDNN step counted with the same FLOPs, and the compiled
blocks' step (on dynamo's aot_eager backend: no C++ compiler needed) with the eager loss."""

import importlib.util
from pathlib import Path

from unimm.nn.onednn_linear import available

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "train_step.py"


def test_quick_train_step_bench(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_train_step", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick", "--no-peer", "--iters", "2", "--compile", "aot_eager", "--out", str(tmp_path)])
    mm = result["matmul_gflops"]
    rows = {r["system"]: r for r in result["table"]}
    assert mm["peak"] == max(v for k, v in mm.items() if k.endswith("_peak")) >= mm["blas_peak"] > 0
    if available():
        dnn = rows["unimm transfusion, oneDNN linears"]
        assert dnn["gflop_per_step"] == rows["unimm transfusion"]["gflop_per_step"]  # FlopCounterMode sees oneDNN
        assert mm["onednn_peak"] > 0 and "oneDNN" in (tmp_path / "train_step.md").read_text()
    comp = rows["unimm transfusion, compiled blocks"]
    assert comp["gflop_per_step"] == rows["unimm transfusion"]["gflop_per_step"]
    compiled = result["unimm_compiled"]["compiled"]
    assert compiled["backend"] == "aot_eager" and compiled["loss_abs_diff"] < 1e-4 * abs(compiled["loss_eager"])
    assert "compiled rows" in (tmp_path / "train_step.md").read_text()
