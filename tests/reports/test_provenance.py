"""Every report.json records where its numbers came from: commit, config hash, wall time, command, software."""

import hashlib
import json
import re

import torch

from conftest import tiny_overrides
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


def test_outside_git_the_commit_is_unknown(tmp_path):
    assert git_state(tmp_path) == {"commit": "unknown", "dirty": None}
