"""run_demo trains a tiny config, writes the report, and reuses a finished run."""

import json
import shutil

from conftest import tiny_overrides
from unimm.config import load_config
from unimm.demo import run_demo
from unimm.train import train


def test_demo_writes_report_and_skips_finished_training(digits_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(digits_dir))
    out, cache = tmp_path / "run", tmp_path / "cache"
    kw = dict(per_class=2, cache_dir=cache, classifier_steps=30, progress=False)
    md = run_demo(cfg, out, **kw)
    report_dir = out / "report"
    assert md == report_dir / "report.md"
    for name in ("loss.png", "samples.png", "captions.png"):
        assert (report_dir / name).stat().st_size > 1000, name
    r = json.loads((report_dir / "report.json").read_text())
    assert {"training", "classifier", "caption", "vqa", "generation", "timing_s"} <= set(r)
    assert r["training"]["status"] == "trained" and r["training"]["tokens_per_s"] > 0
    assert r["caption"]["n"] == 50 and 0 <= r["caption"]["caption_accuracy"] <= 1
    assert r["vqa"]["n"] == 50 and r["generation"]["n"] == 20 and r["generation"]["seed"] == 0
    assert 0 <= r["classifier"]["test_accuracy"] <= 1
    text = md.read_text()
    assert "samples.png" in text and "Generated accuracy" in text and "20 images" in text

    run_demo(cfg, out, **kw)  # finished run: evaluate again, do not retrain
    r2 = json.loads((report_dir / "report.json").read_text())
    assert "skipped" in r2["training"]["status"]
    assert r2["training"]["total_wall_s"] == r["training"]["total_wall_s"]
    assert len(list(cache.iterdir())) == 1


def test_demo_resumes_an_unfinished_run(digits_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(digits_dir))
    out = tmp_path / "run"
    train(cfg, out, progress=False)
    # pretend the run stopped after its step-2 checkpoint
    shutil.rmtree(out / "checkpoints" / "step_0000004")
    (out / "checkpoints" / "latest").write_text("step_0000002")
    run_demo(cfg, out, per_class=1, cache_dir=tmp_path / "cache", classifier_steps=10, progress=False)
    r = json.loads((out / "report" / "report.json").read_text())
    assert r["training"]["status"] == "resumed from step 2"
    assert (out / "checkpoints" / "step_0000004" / "train_state.pt").is_file()
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 4
