"""bench/compile_step.py: the eager and the compiled arm start from the same weights (same first loss), both are
timed in alternating rounds, and the JSON / table carry the ratio."""

import importlib.util
import json
from pathlib import Path

from conftest import tiny_overrides

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "compile_step.py"


def test_compile_step_bench_times_both_arms_from_the_same_weights(digits_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("bench_compile_step", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sets = [x for o in tiny_overrides(digits_dir) for x in ("--set", o)]
    argv = [*sets, "--compile", "aot_eager", "--rounds", "2", "--steps", "1", "--warmup", "1", "--out", str(tmp_path)]
    result = bench.main(argv)
    first = result["first_loss"]
    assert abs(first["eager"] - first["compiled"]) < 1e-4 * abs(first["eager"])
    assert all(len(v) == 2 and min(v) > 0 for v in result["step_s"].values()) and result["speedup_median"] > 0
    assert json.loads((tmp_path / "compile_step.json").read_text())["compile_backend"] == "aot_eager"
    assert "alternating rounds" in (tmp_path / "compile_step.md").read_text()
