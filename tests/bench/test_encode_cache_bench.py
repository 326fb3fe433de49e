"""bench/encode_cache.py: its smoke run trains the editing recipe with the cache off and on and writes its table."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "encode_cache.py"


def test_encode_cache_bench_runs_both_modes(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_encode_cache", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    assert len(result["tokens_per_s"]["off"]) == len(result["tokens_per_s"]["on"]) == 1
    assert 0 <= result["encodes_reused"] < 1 and result["speedup"] > 0
    assert "Cache on / off" in (tmp_path / "encode_cache.md").read_text()
