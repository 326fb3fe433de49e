"""The report's paragraph on the sweep: achieved FLOP/s against the peak, and a peak measured under load."""

import json

from unimm.atlas.runner import start_session
from unimm.atlas.throughput import summary_text, sweep_summary


def _sweep(tmp_path, peak: float, load: float | None, flops: float = 1e12, wall: float = 10.0):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "ledger.json").write_text(json.dumps({"total": flops}))
    session = {"start": 0.0, "end": wall, "jobs": 2, "threads_per_job": 1, "matmul_peak_gflops": peak,
               "finished": ["a"]}  # fmt: skip
    if load is not None:
        session["load_at_start"] = load
    (tmp_path / "sweep.json").write_text(json.dumps({"sessions": [session]}))
    return sweep_summary(tmp_path, [run])


def test_a_quiet_sweep_reports_its_share_of_the_peak(tmp_path):
    s = _sweep(tmp_path, peak=200.0, load=0.1)  # 1e12 FLOPs in 10 s: 100 GFLOP/s
    assert s["achieved_gflops"] == 100.0 and s["share_of_peak"] == 0.5
    text = summary_text(s)
    assert "50% of the fp32 matmul peak" in text and "other work" not in text


def test_a_peak_measured_under_load_is_flagged(tmp_path):
    text = summary_text(_sweep(tmp_path, peak=200.0, load=1.8))
    assert "load average up to 1.80" in text and "the peak reads low" in text


def test_more_than_the_peak_is_called_out_when_no_load_was_recorded(tmp_path):
    text = summary_text(_sweep(tmp_path, peak=80.0, load=None))
    assert "125% of the fp32 matmul peak" in text and "this share means nothing" in text


def test_a_session_records_the_load_it_measured_its_peak_under(tmp_path):
    session = start_session(tmp_path, jobs=1, threads=1, device="cpu")
    stored = json.loads((tmp_path / "sweep.json").read_text())["sessions"][0]
    assert stored["load_at_start"] == session["load_at_start"] and stored["load_at_start"] >= 0
    assert stored["matmul_peak_gflops"] > 0
