"""bench/mar_head.py runs quickly and reports both libraries' products, the table, and a batch-1 head step."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "mar_head.py"


def test_quick_run_reports_products_table_and_step(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_mar_head", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--quick", "--out", str(tmp_path / "mar_head.json")])
    result = json.loads((tmp_path / "mar_head.json").read_text())
    assert [p["rows"] for p in result["products"]] == [6, 192]
    assert all(p[k] > 0 for p in result["products"] for k in p if k.endswith("_us"))
    assert result["table"]["table_us"] > 0 and result["step"]["run_us"] > 0
    assert "| 192 |" in (tmp_path / "mar_head.md").read_text()
    group = result["group"]
    if group is not None:  # the fused loop where a C compiler built it: the same draws as PyTorch's steps
        assert group["fused_us"] > 0 and group["max_abs_diff"] < 1e-3
    c = result["condition"]
    assert c["reused_us"] > 0 and c["layout_us"] > 0 and "`condition`" in (tmp_path / "mar_head.md").read_text()
