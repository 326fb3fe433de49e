"""bench/decode.py: unimm's cached greedy loop yields exactly transformers' generate tokens at a tiny size."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "decode.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_decode", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_decode_tokens_match():
    bench = _load_bench()
    args = bench.parse_args(
        "--hidden 32 --layers 2 --heads 4 --kv-heads 2 --intermediate 64 --vocab 97 --batch 1 3 "
        "--prompt-len 5 --new-tokens 8 --warmup 0 --repeats 1 --max-wait 0 --profile never --kernel-rows 1 3".split()
    )
    result = bench.run(args)
    assert [r["batch"] for r in result["table"]] == [1, 3]
    for row in result["table"]:
        assert row["tokens_match"], f"batch {row['batch']} diverges at step {row['first_divergence']}"
        assert row["compiled_tokens_match"], f"compiled: diverges at step {row['compiled_first_divergence']}"
        assert row["unimm-compiled"]["new_tokens_per_s"] > 0
        assert row["unimm"]["new_tokens_per_s"] > 0 and row["transformers"]["new_tokens_per_s"] > 0
    assert result["hf_attn_implementation"] in ("eager", "sdpa")
    assert [r["compiled_packed"] for r in result["table"]] == [False, result["onednn_beats_blas"]]
    one = result["table"][0]  # batch 1: row products, timed against the sgemv step (the control)
    assert one["compiled_linears"] == "rows" and one["row_products"]["sgemv_tokens_match"]
    assert "row_products" not in result["table"][1] and "multiply-and-sum" in bench.markdown(result)
    if bench.packed_linear.available():  # the MKL / oneDNN sweep over the step's own products
        assert [k["rows"] for k in result["linear_kernels"]] == [1, 3]
        assert all(
            k["products"] == 2 * 4 + 1 and k["mkl_us"] > 0 and k["onednn_us"] > 0 for k in result["linear_kernels"]
        )
        assert result["square_peaks"]["onednn_gflops"] > 0
    assert "oneDNN" in bench.markdown(result)
