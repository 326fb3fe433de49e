"""Every report.json records where its numbers came from: commit, config hash, wall time, command, software."""

import hashlib
import json
import re

import torch

from conftest import tiny_overrides
from unimm import provenance as prov
from unimm.config import load_config
from unimm.demo import run_demo
from unimm.eval.harness import Suite
from unimm.provenance import git_state

TINY = Suite("tiny", understand_n=8, per_class=1, prompts_n=10, batch_size=25, classifier_steps=10,
             distribution=False)  # fmt: skip


def test_demo_report_records_its_provenance(digits_dir, tmp_path):
    out = tmp_path / "run"
    md = run_demo(load_config(None, tiny_overrides(digits_dir)), out, suite=TINY, cache_dir=tmp_path / "cache",
                  progress=False, command="unimm demo --out run")  # fmt: skip
    p = json.loads((md.parent / "report.json").read_text())["provenance"]
    assert re.fullmatch(r"[0-9a-f]{40}", p["commit"]) or (p["commit"] == "unknown" and p["dirty"] is None)
    assert p["config_sha256"] == hashlib.sha256((out / "config.toml").read_bytes()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", p["source_sha256"])
    wall = p["wall_s"]
    assert wall["train"] > 0 and wall["evaluate"] > 0 and wall["this_call"] >= wall["train"] + wall["evaluate"] - 0.02
    assert p["command"] == "unimm demo --out run" and p["torch"] == torch.__version__ and p["date"][:2] == "20"
    assert "## Provenance" in md.read_text() and p["config_sha256"] in md.read_text()
    # training recorded the code it ran on; the report ran on the same code
    assert [s["from_step"] for s in p["trained_on"]] == [0] and p["same_code"] is True
    assert p["trained_on"][0]["source_sha256"] == p["source_sha256"] == p["evaluated_on"]["source_sha256"]
    assert "| code at evaluation | the same code |" in md.read_text()


def test_outside_git_the_commit_is_unknown(tmp_path):
    assert git_state(tmp_path) == {"commit": "unknown", "dirty": None}


def test_a_report_written_after_the_code_changed_names_the_training_code(tmp_path, monkeypatch):
    """A run trained on one commit and reported after a pull: the block names the training code and says the
    evaluation ran on other code; every training session (a resume) is listed."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('name = "x"\n')
    prov.record_training_code(run, 0)
    trained = prov.code_state()
    monkeypatch.setattr(prov, "source_hash", lambda: "f" * 64)
    monkeypatch.setattr(prov, "git_state", lambda root=None: {"commit": "e" * 40, "dirty": False})
    prov.record_training_code(run, 600)  # resumed on the new code
    p = prov.provenance(run / "config.toml", {"train": 1.0, "evaluate": 1.0, "this_call": 2.0})
    assert (p["commit"], p["source_sha256"]) == (trained["commit"], trained["source_sha256"])
    assert [s["from_step"] for s in p["trained_on"]] == [0, 600] and p["trained_on"][1]["commit"] == "e" * 40
    assert p["evaluated_on"]["source_sha256"] == "f" * 64 and p["same_code"] is False


def test_a_run_without_a_record_falls_back_to_the_code_of_the_report(tmp_path):
    (tmp_path / "config.toml").write_text('name = "x"\n')
    p = prov.provenance(tmp_path / "config.toml", {"train": None, "evaluate": 1.0, "this_call": 1.0})
    assert p["trained_on"] is None and p["same_code"] is None
    assert p["source_sha256"] == p["evaluated_on"]["source_sha256"] == prov.source_hash()


def test_training_records_the_code_it_started_on_not_the_code_after_its_preparation(digits_dir, tmp_path, monkeypatch):
    """The codec fit runs for minutes before training; an edit or a commit meanwhile must not be recorded as the
    code that trained (the process loaded the code it started on)."""
    from unimm.models import UnifiedModel
    from unimm.train.loop import train

    real = UnifiedModel.prepare

    def prepare_while_the_tree_moves_on(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        monkeypatch.setattr(prov, "source_hash", lambda: "f" * 64)  # the tree changed during preparation
        return out

    monkeypatch.setattr(UnifiedModel, "prepare", prepare_while_the_tree_moves_on)
    before = prov.source_hash()
    train(load_config(None, tiny_overrides(digits_dir, **{"train.steps": 2})), tmp_path / "run", progress=False)
    sessions = json.loads((tmp_path / "run" / "trained_on.json").read_text())
    assert [s["source_sha256"] for s in sessions] == [before] != ["f" * 64]
