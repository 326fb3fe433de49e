"""bench/memory.py runs at a tiny size, reports every variant, and checkpointing saves less for backward."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "memory.py"


def test_quick_run_reports_every_variant(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_memory", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    md = (tmp_path / "memory.md").read_text()
    for name in ("fp32", "fp32 + checkpointing", "bf16", "bf16 + checkpointing"):
        assert f"| {name} |" in md
    rows = {r["variant"]: r for r in json.loads((tmp_path / "memory.json").read_text())["table"]}
    assert rows["fp32 + checkpointing"]["saved_after_forward_mb"] < rows["fp32"]["saved_after_forward_mb"]
    assert rows["fp32 + checkpointing"]["loss"] == rows["fp32"]["loss"]  # recomputation changes nothing
