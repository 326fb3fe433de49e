"""`unimm reports`: the declared targets, one clear error for an unknown one, and a tiny target run end to end."""

import hashlib
import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

import unimm.reports.run
from conftest import tiny_overrides
from unimm.cli import app
from unimm.config import dump_toml, load_config
from unimm.eval import harness
from unimm.eval.harness import Suite
from unimm.reports import TARGETS, Target, run_reports, stale_tables
from unimm.reports.tables import PAGES, demo_table

ROOT = Path(__file__).resolve().parents[2]
TINY = Suite("tiny", understand_n=8, per_class=1, prompts_n=10, batch_size=25, classifier_steps=10,
             distribution=False)  # fmt: skip


def test_dry_run_lists_the_targets(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIMM_CACHE", str(tmp_path / "cache"))
    res = CliRunner().invoke(app, ["reports", "--dry-run", "--root", str(ROOT)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("tokenizer: unimm tokenizer train configs/tok/vq.toml --out ")
    assert [line.split(":")[0] for line in lines[1:-1]] == [t.name for t in TARGETS]
    assert all(line.endswith("[to run]") for line in lines[1:-1])
    chameleon = next(line for line in lines if line.startswith("chameleon:"))
    assert "--config configs/chameleon.toml" in chameleon and "codec.tokenizer=" in chameleon
    assert not (tmp_path / "cache").exists()  # nothing ran
    res = CliRunner().invoke(app, ["reports", "--dry-run", "--only", "mar", "--only", "demo", "--root", str(ROOT)])
    assert [line.split(":")[0] for line in res.output.splitlines()[:-1]] == ["demo", "mar"]  # declared order


def test_an_unknown_target_is_one_error():
    res = CliRunner().invoke(app, ["reports", "--only", "demo,chamelon", "--dry-run", "--root", str(ROOT)])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        f"error: unknown report target 'chamelon'; use one of {', '.join(t.name for t in TARGETS)}"
    ]


def test_a_target_is_run_published_and_tabulated(digits_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(harness.SUITES, "demo", TINY)
    monkeypatch.setitem(harness.SUITES, "quick", TINY)
    root, cache = tmp_path / "repo", tmp_path / "cache"
    for page in PAGES:
        (root / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / page, root / page)
    (root / "configs").mkdir()
    (root / "configs" / "tiny.toml").write_text(dump_toml(load_config(None, tiny_overrides(digits_dir))))
    docs = root / "docs" / "demo"
    (docs / "dev_run").mkdir(parents=True)
    (docs / "dev_run" / "report.md").write_text("kept")
    (docs / "experts.png").write_bytes(b"from an older run")
    target = Target("demo", "configs/tiny.toml", "docs/demo", "tiny")

    run_reports([target], root, cache, progress=False)
    assert sorted(f.name for f in docs.iterdir()) == [
        "captions.png", "config.toml", "dev_run", "eval", "loss.png", "report.json", "report.md", "samples.png"
    ]  # fmt: skip
    assert sorted(f.name for f in (docs / "eval").iterdir()) == ["eval.json", "eval.md", "samples.png"]
    report, evaluation = (json.loads((docs / n).read_text()) for n in ("report.json", "eval/eval.json"))
    config_hash = hashlib.sha256((docs / "config.toml").read_bytes()).hexdigest()
    assert report["provenance"]["config_sha256"] == evaluation["provenance"]["config_sha256"] == config_hash
    assert report["provenance"]["command"].startswith("unimm demo --config configs/tiny.toml --out ")
    assert evaluation["suite"]["name"] == "tiny" and (docs / "dev_run" / "report.md").read_text() == "kept"
    block = "\n".join(demo_table(root, Path(".")))
    assert block in (root / "README.md").read_text() and "not regenerated" not in block
    assert stale_tables(root) == []

    for name in ("run_demo", "evaluate"):  # a finished target is published again, not trained or evaluated again
        monkeypatch.setattr(unimm.reports.run, name, None)
    run_reports([target], root, cache, progress=False)
    assert json.loads((docs / "report.json").read_text()) == report
