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
        "--prompt-len 5 --new-tokens 8 --warmup 0 --repeats 1 --max-wait 0 --profile never".split()
    )
    result = bench.run(args)
    assert [r["batch"] for r in result["table"]] == [1, 3]
    for row in result["table"]:
        assert row["tokens_match"], f"batch {row['batch']} diverges at step {row['first_divergence']}"
        assert row["compiled_tokens_match"], f"compiled: diverges at step {row['compiled_first_divergence']}"
        assert row["unimm-compiled"]["new_tokens_per_s"] > 0
        assert row["unimm"]["new_tokens_per_s"] > 0 and row["transformers"]["new_tokens_per_s"] > 0
    assert result["hf_attn_implementation"] in ("eager", "sdpa")
