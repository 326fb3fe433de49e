"""run_demo trains a tiny config, reports through the eval harness, and reuses a finished run."""

import json
import shutil
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

import unimm.demo
from conftest import tiny_overrides
from unimm.cli import app
from unimm.config import load_config
from unimm.demo import run_demo
from unimm.eval import harness
from unimm.eval.harness import Suite
from unimm.models import UnifiedModel
from unimm.train import train

TINY = Suite("tiny", understand_n=None, per_class=2, prompts_n=20, batch_size=25, classifier_steps=30,
             distribution=False)  # fmt: skip


def _numbers(result: dict) -> dict:
    """Everything but the timings and the memory peak (which vary between identical calls)."""
    drop = {"samples_per_s", "latency_s", "peak_memory_mib", "rank_samples_per_s", "heldout_samples_per_s"}
    if isinstance(result, dict):
        return {k: _numbers(v) for k, v in result.items() if k not in drop and not k.startswith("_")}
    return result


def test_demo_writes_report_and_skips_finished_training(digits_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(digits_dir))
    out, cache = tmp_path / "run", tmp_path / "cache"
    kw = dict(suite=TINY, cache_dir=cache, progress=False)
    md = run_demo(cfg, out, **kw)
    report_dir = out / "report"
    assert md == report_dir / "report.md"
    for name in ("loss.png", "samples.png", "captions.png"):
        assert (report_dir / name).stat().st_size > 1000, name
    r = json.loads((report_dir / "report.json").read_text())
    assert {"training", "sampling", "prompts", "eval", "timing_s"} <= set(r)
    assert r["training"]["status"] == "trained" and r["training"]["tokens_per_s"] > 0
    u, g = r["eval"]["understanding"], r["eval"]["generation"]
    assert u["n"] == 50 and u["vqa_n"] == 50 and 0 <= u["caption_accuracy"] <= 1
    assert g["prompt_accuracy_n"] == 20 and g["seed"] == 0 and len(g["prompt_accuracy_per_class"]) == 10
    assert 0 <= r["eval"]["evaluators"]["classifier_test_accuracy"] <= 1
    assert "fid" not in g and r["eval"]["evaluators"]["clip_test_retrieval_accuracy"] is None  # not in this suite
    text = md.read_text()
    assert "samples.png" in text and "Generated accuracy" in text and "20 images" in text
    assert "| vqa_accuracy |" in text  # eval.md's table

    run_demo(cfg, out, **kw)  # finished run: evaluate again, do not retrain
    r2 = json.loads((report_dir / "report.json").read_text())
    assert "skipped" in r2["training"]["status"]
    assert r2["training"]["total_wall_s"] == r["training"]["total_wall_s"]
    assert [p.name for p in cache.iterdir()] == ["classifiers"] and len(list((cache / "classifiers").iterdir())) == 1


def test_demo_and_eval_give_the_same_numbers(digits_dir, tmp_path, monkeypatch):
    """`unimm demo` then `unimm eval RUN --suite demo` on the same run: the same questions, parser, evaluator
    cache ($UNIMM_CACHE) and samples, so every number but the timings agrees."""
    monkeypatch.setitem(harness.SUITES, "demo", TINY)
    monkeypatch.setenv("UNIMM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    run_demo(load_config(None, tiny_overrides(digits_dir)), out, progress=False)
    res = CliRunner().invoke(app, ["eval", str(out), "--suite", "demo", "--out", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    demo = json.loads((out / "report" / "report.json").read_text())["eval"]
    cli = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert cli.pop("provenance")["config_sha256"]  # where the numbers came from; the demo's is in its report
    assert _numbers(demo) == _numbers(cli)
    assert demo["understanding"]["vqa_question"] == cli["understanding"]["vqa_question"]
    assert len(list((tmp_path / "cache" / "classifiers").iterdir())) == 1  # one evaluator, trained once


def test_the_demo_measures_nothing_itself(digits_dir, tmp_path, monkeypatch):
    """Every caption and image the demo asks the model for is asked inside the harness's ``evaluate``, and the
    report shows what ``evaluate`` returned (here doctored), so the demo has no evaluation of its own."""
    inside, calls = [False], []

    def only_inside(method):
        def wrapped(self, *args, **kw):
            assert inside[0], f"{method.__name__} called outside the harness"
            return method(self, *args, **kw)

        return wrapped

    def doctored(model, suite, **kw):
        inside[0] = True
        result = harness.evaluate(model, suite, **kw)
        inside[0] = False
        calls.append(suite)
        result["understanding"]["caption_accuracy"] = 0.123
        result["generation"]["prompt_accuracy"] = 0.987
        return result

    monkeypatch.setattr(UnifiedModel, "caption", only_inside(UnifiedModel.caption))
    monkeypatch.setattr(UnifiedModel, "generate", only_inside(UnifiedModel.generate))
    monkeypatch.setattr(unimm.demo, "evaluate", doctored)
    md = run_demo(load_config(None, tiny_overrides(digits_dir)), tmp_path / "run", suite=TINY,
                  cache_dir=tmp_path / "cache", progress=False)  # fmt: skip
    assert calls == [TINY]
    r = json.loads((md.parent / "report.json").read_text())
    assert r["eval"]["understanding"]["caption_accuracy"] == 0.123
    assert "| caption_accuracy | 0.123 |" in md.read_text() and "**Generated accuracy 0.987**" in md.read_text()


def test_demo_resumes_an_unfinished_run(digits_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(digits_dir))
    out = tmp_path / "run"
    train(cfg, out, progress=False)
    # pretend the run stopped after its step-2 checkpoint
    shutil.rmtree(out / "checkpoints" / "step_0000004")
    (out / "checkpoints" / "latest").write_text("step_0000002")
    suite = Suite("tiny", understand_n=8, per_class=1, prompts_n=10, classifier_steps=10, distribution=False)
    run_demo(cfg, out, suite=suite, cache_dir=tmp_path / "cache", progress=False)
    r = json.loads((out / "report" / "report.json").read_text())
    assert r["training"]["status"] == "resumed from step 2"
    assert (out / "checkpoints" / "step_0000004" / "train_state.pt").is_file()
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 4


def test_the_tokenizer_paragraph_leaves_the_ledger_entries_to_the_ledger():
    from unimm.demo import _tokenizer_paragraph
    from unimm.document import Document

    doc = Document("t")
    stats = {"vae_recon_mse": 0.01, "flops.codec.steps": 1e9, "shared_flops.codec.tokenizer": None, "prep_wall_s": 2}
    _tokenizer_paragraph(doc, stats)
    text = doc.markdown(Path("."))
    assert "vae_recon_mse 0.01" in text and "flops" not in text and "prep_wall_s" not in text


def test_demo_on_a_video_dataset_writes_the_video_report(clips_dir, tmp_path):
    """A video dataset trains and gets eval/video.py's metrics, an animated GIF, frame strips and provenance."""
    cfg = load_config(None, tiny_overrides(clips_dir, **{"sample.steps": 2}))
    path = run_demo(cfg, tmp_path / "run", suite=TINY, cache_dir=tmp_path, progress=False, command="unimm demo x")
    report_dir = path.parent
    for name in ("report.md", "report.json", "eval.json", "eval.md", "samples.gif", "strips.png", "loss.png"):
        assert (report_dir / name).is_file(), name
    report = json.loads((report_dir / "report.json").read_text())
    assert report["kind"] == "video" and report["frames"] == 3 and report["training"]["status"] == "trained"
    g, u = report["eval"]["generation"], report["eval"]["understanding"]
    for key in ("frame_prompt_accuracy", "motion_accuracy", "same_class_every_frame", "frame_consistency"):
        assert 0 <= g[key] <= 1, key
    assert g["n"] == 6 and g["reference"]["motion_accuracy"] == 1.0  # the real clips' ceiling beside them
    assert 0 <= u["caption_exact_match"] <= 1 and 0 <= u["direction_vqa_accuracy"] <= 1
    assert report["provenance"]["command"] == "unimm demo x" and report["training"]["total_wall_s"] > 0
    with Image.open(report_dir / "samples.gif") as gif:
        assert gif.is_animated and gif.n_frames == 3
    text = path.read_text()
    assert "per-frame prompt accuracy" in text and "samples.gif" in text and "motion accuracy" in text
    again = run_demo(cfg, tmp_path / "run", suite=TINY, cache_dir=tmp_path, progress=False)
    assert "skipped" in json.loads((again.parent / "report.json").read_text())["training"]["status"]
