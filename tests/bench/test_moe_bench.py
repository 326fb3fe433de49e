"""bench/moe.py runs at a tiny size and reports every layer kind against its dense baseline."""

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "moe.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_moe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_reports_every_layer_kind(tmp_path):
    bench = _load_bench()
    bench.main(["--quick", "--out", str(tmp_path)])
    md = (tmp_path / "moe.md").read_text()
    for name in (
        "dense",
        "moe",
        "modality-moe",
        "moe, autograd ops",
        "naive-moe",
        "dense-block",
        "moe-block",
        "mot-block",
    ):
        assert f"| {name} |" in md
    import json

    from unimm.nn.onednn_linear import available

    table = json.loads((tmp_path / "moe.json").read_text())["table"]
    dnn = {r["layer"]: r for r in table if r["group"] == "ffn, oneDNN"}
    assert set(dnn) == ({"dense", "moe", "modality-moe", "moe, autograd ops"} if available() else set())
    assert all(r["vs_dense"] > 0 for r in dnn.values()) and (not dnn or dnn["dense"]["vs_dense"] == 1.0)

    stage = json.loads((tmp_path / "moe.json").read_text())["stage_vs_autograd"]
    assert set(stage) == ({"ffn", "ffn, oneDNN"} if available() else {"ffn"})
    assert all(0 < q["q10"] <= q["median"] <= q["q90"] for q in stage.values())
    assert "in-place expert stage runs at" in md
    same = json.loads((tmp_path / "moe.json").read_text())["stage_same_results"]
    assert set(same) == ({"blas", "onednn"} if available() else {"blas"})
    assert all(q["max_abs_diff"] < 1e-4 for q in same.values())  # the stage computes what autograd's ops do
    assert md.count("the stage and autograd's ops give") == len(same)

    b = json.loads((tmp_path / "moe.json").read_text())["moe_breakdown"]
    assert sum(b["expert_counts"]) == 2 * 16 * 2  # batch 2 x seq 16 tokens, top-2 choices each
    parts = b["parts_ms"]
    assert set(parts) == {
        "routing",
        "permutation",
        "experts (balanced counts)",
        "imbalance",
        "rest (statistics, Python)",
    }
    assert parts["routing"] > 0 and parts["permutation"] > 0 and parts["experts (balanced counts)"] > 0
    assert abs(sum(parts.values()) - b["total_ms"]) < 1e-2  # the rest closes the sum
    assert "## Where the routed FFN's time goes" in md
    po = b["products_only"]
    assert po["dense_ms"] > 0 and po["experts_ms"] > 0 and po["vs_dense"] > 0 and "matrix products" in md


def test_naive_reference_equals_the_sorted_dispatch():
    bench = _load_bench()
    from unimm.nn.moe import MoEFeedForward

    torch.manual_seed(0)
    layer = MoEFeedForward(16, 8, 4, 2)
    x, modality = torch.randn(10, 16), torch.zeros(10, dtype=torch.long)
    torch.testing.assert_close(bench.naive_moe(layer, x, modality), layer(x[None], modality[None])[0][0])
