"""A strategy's further suites in the atlas (``suites``, ``atlas/further.py``): planned with its runs, refused where
the data cannot serve them, evaluated by the worker into eval.json, and read back as atlas metrics and a report
section."""

import json
import re
from pathlib import Path

import pytest

from conftest import tiny_preset
from unimm.atlas import load_atlas, plan_runs
from unimm.atlas.metrics import HIGHER_IS_BETTER, RATES
from unimm.atlas.report import _further
from unimm.atlas.results import RunResult, load_result
from unimm.atlas.runner import run_launch
from unimm.atlas.worker import eval_run
from unimm.config import ConfigError
from unimm.document import Document
from unimm.train.loop import train

CONFIGS = Path(__file__).parents[2] / "configs"


def _atlas(tmp_path: Path, data: Path, suites: str, **eval_sets) -> Path:
    ev = "".join(f"{k} = {v}\n" for k, v in eval_sets.items())
    text = f"""name = "further"\ndata = "{data}"\n[budget]\nflops = 1e9\n[eval]\n{ev}[[strategies]]
name = "c"\npreset = "{CONFIGS / "chameleon.toml"}"\nsuites = {suites}\n"""
    (tmp_path / "atlas.toml").write_text(text)
    return tmp_path / "atlas.toml"


def test_suites_are_planned_with_the_runs_and_edit_needs_an_edit_dataset(digits_dir, edits_dir, tmp_path):
    atlas = load_atlas(_atlas(tmp_path, digits_dir, '["interleaved"]', interleaved_n=5))
    (run,) = plan_runs(atlas)
    assert run.suites == ("interleaved",) and "suites" not in run.spec()  # evaluation, not training
    assert run_launch({"device": "cpu"}, run, {})["suites"] == ["interleaved"]  # what the worker reads
    assert atlas.eval.overrides()["interleaved_n"] == 5
    with pytest.raises(ConfigError, match="not an edit dataset"):
        plan_runs(load_atlas(_atlas(tmp_path, digits_dir, '["edit"]')))
    (edit,) = plan_runs(load_atlas(_atlas(tmp_path, edits_dir, '["edit"]')))
    assert edit.suites == ("edit",)
    with pytest.raises(ConfigError, match=re.escape("'strategies.0.suites.0'")):
        load_atlas(_atlas(tmp_path, digits_dir, '["video"]'))
    for metric in ("edit_accuracy", "edit_preservation", "slot_accuracy", "interleaved_consistency"):
        assert HIGHER_IS_BETTER[metric] and metric in RATES


def test_the_worker_adds_the_interleaved_section_and_the_atlas_reads_its_metrics(digits_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("UNIMM_CACHE", str(tmp_path / "cache"))
    cfg = tiny_preset(digits_dir, "chameleon", **{"data.interleaved_fraction": 0.5, "model.max_seq_len": 160})
    folder = train(cfg, tmp_path / "run", progress=False)
    overrides = {"understand_n": 4, "per_class": 1, "prompts_n": 10, "classifier_steps": 20, "clip_steps": 10,
                 "distribution": False, "rank": False, "heldout": False, "interleaved_n": 3}  # fmt: skip
    launch = {"device": "cpu", "eval": {"suite": "quick", "seed": 0, "overrides": overrides}, "suites": ["interleaved"]}
    (folder / "atlas_run.json").write_text(json.dumps({"launch": launch}))
    eval_run(folder)
    ev = json.loads((folder / "eval" / "eval.json").read_text())
    assert len(ev["interleaved"]["results"]) == 3 and "generation" in ev  # beside the harness's sections
    (planned,) = plan_runs(load_atlas(_atlas(tmp_path, digits_dir, '["interleaved"]')))
    values = load_result(planned, folder).values
    assert values["slot_accuracy"] == ev["interleaved"]["slot_accuracy"]["rate"]
    assert 0 <= values["interleaved_task_accuracy"] <= values["slot_accuracy"] <= 1
    doc = Document("t")
    rows = _further(doc, [RunResult(planned, folder, "done", values=values)])
    assert rows[0]["slot_accuracy"] == values["slot_accuracy"] and rows[0]["edit_accuracy"] is None
    md = doc.markdown(tmp_path)
    assert "## Editing and interleaved generation" in md and f"| `{planned.name}` | {digits_dir.name} |" in md
    assert _further(Document("t"), [RunResult(planned, folder, "done", values={"caption_accuracy": 0.5})]) == []


def test_on_an_edit_dataset_the_worker_adds_the_editing_section(edits_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("UNIMM_CACHE", str(tmp_path / "cache"))
    cfg = tiny_preset(edits_dir, "chameleon", **{"data.edit_fraction": 0.75})
    folder = train(cfg, tmp_path / "run", progress=False)
    overrides = {"understand_n": 4, "per_class": 1, "prompts_n": 4, "classifier_steps": 20, "clip_steps": 10,
                 "distribution": False, "rank": False, "heldout": False, "edits_n": 3}  # fmt: skip
    launch = {"device": "cpu", "eval": {"suite": "quick", "seed": 0, "overrides": overrides}, "suites": ["edit"]}
    (folder / "atlas_run.json").write_text(json.dumps({"launch": launch}))
    eval_run(folder)
    ev = json.loads((folder / "eval" / "eval.json").read_text())
    assert len(ev["editing"]["results"]) == 3 and "understanding" in ev
    (planned,) = plan_runs(load_atlas(_atlas(tmp_path, edits_dir, '["edit"]')))
    values = load_result(planned, folder).values
    assert values["edit_accuracy"] == ev["editing"]["edit"]["rate"] and "slot_accuracy" not in values
    assert 0 <= values["edit_both"] <= min(values["edit_accuracy"], values["edit_preservation"]) <= 1
