"""bench/gpu_check.py --cpu: the code paths of the one-shot GPU check, end to end at tiny sizes in fp32.

The in-process sections (peak, mfu, presets, decode, sample) run in the default suite. The sections that start
processes of their own (parallel: ``unimm train`` under a one-process DDP and FSDP2 group; atlas: ``unimm atlas``)
cost about a minute of CPU time, so the default suite checks only that the micro atlas they would run is a valid
atlas; ``UNIMM_SLOW_TESTS=1`` runs them too (``unimm atlas`` itself is tested end to end in tests/atlas).
"""

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"
IN_PROCESS = ["peak", "mfu", "presets", "decode", "sample"]


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _check_common(result: dict, path: Path, sections: list[str]) -> None:
    assert json.loads(path.read_text())["sections"].keys() == result["sections"].keys()
    assert (result["mode"], result["precision"]) == ("cpu", "fp32") and "fp32" in result["precision_note"]
    assert list(result["sections"]) == sections
    for name, section in result["sections"].items():
        assert section["status"] == "ok", (name, section.get("error"), section.get("traceback"))
        assert section["error"] is None and section["seconds"] >= 0
    assert result["headline"]["sections_ok"] == sections and not result["headline"]["sections_not_ok"]


def test_cpu_run_of_the_in_process_sections(tmp_path):
    bench = _load()
    out = tmp_path / "gpu_check.json"
    threads = torch.get_num_threads()
    try:
        result = bench.main(["--cpu", "--only", ",".join(IN_PROCESS), "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    _check_common(result, out, IN_PROCESS)
    s = result["sections"]
    assert s["peak"]["dtype"] == "float32" and s["peak"]["measured_peak_flops"] > 0
    assert s["peak"]["nominal_peak_flops"] is None  # no spec-sheet peak for a CPU
    mfu = s["mfu"]
    assert mfu["flops_per_step"] > 0 and mfu["tokens_per_s"] > 0 and 0 < mfu["mfu_vs_measured_peak"] < 1
    assert mfu["mfu_vs_nominal_peak"] is None and mfu["out_of_memory_at"] == []
    compiled = mfu["compiled"]  # train.compile = true (dynamo's eager backend on a CPU)
    assert compiled["step_s"] > 0 and compiled["compile_s"] > 0 and 0 < compiled["mfu_vs_measured_peak"] < 1
    assert result["headline"]["mfu_compiled_vs_measured_peak"] == compiled["mfu_vs_measured_peak"]
    table = out.with_suffix(".md").read_text()
    assert "| tokens/s |" in table and "| quick |" in table and "greedy decode" in table
    presets = s["presets"]["presets"]
    assert sorted(presets) == bench.PRESETS and len(presets) >= 10  # every configs/*.toml
    for name, row in presets.items():
        assert row["status"] == "ok" and row["loss_finite"], (name, row)
        assert math.isfinite(row["loss_last"]) and row["steps_per_s"] > 0 and row["tokens_per_s"] > 0
    assert set(s["decode"]["greedy_decode"]) == {"1", "4"}
    assert all(r["new_tokens_per_s"] > 0 for r in s["decode"]["greedy_decode"].values())
    compiled = s["decode"]["compiled_decode"]  # the StaticDecoder gives the eager tokens (fp32 on the CPU)
    assert set(compiled) == {"1", "4"} and all(r["same_tokens_as_eager"] == 1.0 for r in compiled.values())
    captions = s["decode"]["captions"]
    assert {c["text"] for c in captions.values()} == {"ar", "masked"}  # next-token and masked text decoding
    assert all(len(c["sampled"]) == 2 and c["caption_tokens_per_s"] > 0 for c in captions.values())
    sample = s["sample"]
    assert {sample[p]["writer"] for p in bench.SAMPLE_PRESETS} == {"latent", "ar-codes", "mar"}
    assert all(sample[p]["shape"] == [2, 1, 8, 8] for p in bench.SAMPLE_PRESETS)
    assert (tmp_path / sample["png"]).stat().st_size > 100
    assert result["headline"]["preset_steps_per_s"].keys() == presets.keys()


def test_a_section_that_fails_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    bench = _load()

    def broken(run):
        raise RuntimeError("planted")

    monkeypatch.setattr(bench, "section_peak", broken)
    out = tmp_path / "gpu_check.json"
    result = bench.main(["--cpu", "--only", "peak,presets", "--presets", "quick", "--steps", "2", "--out", str(out)])
    peak, presets = result["sections"]["peak"], result["sections"]["presets"]
    assert peak["status"] == "failed" and peak["error"] == "RuntimeError: planted" and "planted" in peak["traceback"]
    assert presets["status"] == "ok" and list(presets["presets"]) == ["quick"]
    assert result["headline"]["sections_not_ok"] == {"peak": "failed"}
    late = bench.main(["--cpu", "--only", "peak", "--time-limit", "1", "--out", str(out)])
    assert late["sections"]["peak"]["status"] == "skipped" and "time limit" in late["sections"]["peak"]["error"]


def test_the_micro_atlas_is_a_valid_two_strategy_atlas(tmp_path):
    bench = _load()
    from unimm.atlas import load_atlas, plan_runs

    run = bench.Run(torch.device("cpu"), "fp32", bench.cpu_sizes(), tmp_path, [], tmp_path, bench.Clock(60))
    path = tmp_path / "atlas.toml"
    path.write_text(bench.atlas_toml(run))
    runs = plan_runs(load_atlas(path))
    assert [r.strategy for r in runs] == ["transfusion", "chameleon"]


@pytest.mark.skipif(os.environ.get("UNIMM_SLOW_TESTS") != "1", reason="about a minute of CPU: UNIMM_SLOW_TESTS=1")
def test_cpu_run_of_the_process_sections(tmp_path):
    bench = _load()
    out = tmp_path / "gpu_check.json"
    result = bench.main(["--cpu", "--only", "parallel,atlas", "--out", str(out)])
    _check_common(result, out, ["parallel", "atlas"])
    for mode in ("ddp", "fsdp"):
        row = result["sections"]["parallel"][mode]
        assert row["parallel_saved"] and math.isfinite(row["loss_last"]) and row["steps"] == 2
    runs = result["sections"]["atlas"]["runs"]
    assert len(runs) == 2 and all(r["evaluated"] and r["steps"] > 0 for r in runs.values())


def test_cpu_run_of_the_video_section(tmp_path):
    """Clips made from the digits; the three video layouts train, write clips of the data's shape and caption."""
    bench = _load()
    out = tmp_path / "gpu_check.json"
    threads = torch.get_num_threads()
    try:
        result = bench.main(["--cpu", "--only", "video", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    _check_common(result, out, ["video"])
    video = result["sections"]["video"]
    layouts = video["layouts"]
    assert list(layouts) == list(bench.VIDEO_PRESETS)
    assert [r["writer"] for r in layouts.values()] == ["latent", "ar-codes", "masked-codes"]
    for name, row in layouts.items():
        assert row["loss_finite"] and row["batch"] == 2 and row["clips_per_s"] > 0, (name, row)
        assert len(row["captions"]) == 2 and all(isinstance(c, str) for c in row["captions"])
        assert " moving " in row["prompts"][0]  # text-to-video prompts are the clips' captions
    assert (tmp_path / video["png"]).stat().st_size > 100
    assert "video `chameleon`" in out.with_suffix(".md").read_text()
