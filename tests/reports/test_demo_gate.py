"""`unimm demo-check`: CI's floors on a fresh demo — one line naming each metric that fell, exit 1; and CI runs it."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unimm.cli import app
from unimm.reports.gate import check_report, shortfalls

ROOT = Path(__file__).resolve().parents[2]


def _report(caption: float, generated: float) -> dict:
    return {"eval": {"understanding": {"caption_accuracy": caption}, "generation": {"prompt_accuracy": generated}}}


def _write(tmp_path: Path, report: dict) -> Path:
    path = tmp_path / "runs" / "demo" / "report" / "report.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(report))
    return path


def test_floors_name_each_metric_that_fell():
    assert shortfalls(_report(0.97, 0.99)) == []
    assert shortfalls(_report(0.95, 0.95)) == []  # the floor itself passes
    assert shortfalls(_report(0.412, 0.99)) == ["caption accuracy 41.2 % < 95.0 %"]
    assert shortfalls(_report(0.99, 0.9)) == ["generated accuracy 90.0 % < 95.0 %"]
    assert len(shortfalls(_report(0.1, 0.1))) == 2
    assert shortfalls(_report(0.97, 0.99), {"caption accuracy": 0.98}) == ["caption accuracy 97.0 % < 98.0 %"]


def test_a_missing_metric_fails_the_gate():
    report = _report(0.99, 0.99)
    del report["eval"]["generation"]
    assert shortfalls(report) == ["generated accuracy missing from the report (eval.generation.prompt_accuracy)"]


def test_cli_fails_with_one_line(tmp_path):
    _write(tmp_path, _report(0.412, 0.99))
    res = CliRunner().invoke(app, ["demo-check", str(tmp_path / "runs" / "demo")])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo check failed: caption accuracy 41.2 % < 95.0 %"), lines


def test_cli_passes_and_says_the_values(tmp_path):
    path = _write(tmp_path, _report(0.971, 0.988))
    res = CliRunner().invoke(app, ["demo-check", str(path)])
    assert res.exit_code == 0, res.output
    assert "caption accuracy 97.1 %" in res.output and "generated accuracy 98.8 %" in res.output
    res = CliRunner().invoke(app, ["demo-check", str(path), "--caption", "0.98"])
    assert res.exit_code == 1 and "caption accuracy 97.1 % < 98.0 %" in res.output


def _video(frame: float, motion: float, direction: float) -> dict:
    return {
        "kind": "video",
        "eval": {
            "generation": {"frame_prompt_accuracy": frame, "motion_accuracy": motion},
            "understanding": {"direction_vqa_accuracy": direction},
        },
    }


def test_a_video_report_is_held_to_the_video_floors():
    assert shortfalls(_video(0.9, 0.8, 0.9)) == []
    assert shortfalls(_video(0.55, 0.9, 1.0)) == ["per-frame prompt accuracy 55.0 % < 90.0 %"]
    assert shortfalls(_video(0.95, 0.79, 0.5)) == [
        "motion accuracy 79.0 % < 80.0 %",
        "direction QA accuracy 50.0 % < 90.0 %",
    ]
    report = _video(0.95, 0.9, 1.0)
    del report["eval"]["understanding"]
    assert shortfalls(report) == [
        "direction QA accuracy missing from the report (eval.understanding.direction_vqa_accuracy)"
    ]
    with pytest.raises(ValueError, match="video demo report has no metric caption accuracy"):
        shortfalls(_video(1, 1, 1), {"caption accuracy": 0.5})


def test_cli_checks_a_video_report_with_its_own_options(tmp_path):
    path = _write(tmp_path, _video(0.55, 0.9, 1.0))
    res = CliRunner().invoke(app, ["demo-check", str(path)])
    assert res.exit_code == 1 and "per-frame prompt accuracy 55.0 % < 90.0 %" in res.output
    res = CliRunner().invoke(app, ["demo-check", str(path), "--frame-prompt", "0.5"])
    assert res.exit_code == 0 and "motion accuracy 90.0 %" in res.output, res.output
    res = CliRunner().invoke(app, ["demo-check", str(path), "--caption", "0.5"])
    assert res.exit_code == 1 and "has no metric caption accuracy" in res.output


def test_no_report_or_a_corrupt_one_fails(tmp_path):
    passed, message = check_report(tmp_path / "nowhere")
    assert not passed and "no report at" in message
    path = _write(tmp_path, {})
    path.write_text('{"eval": ')
    passed, message = check_report(path)
    assert not passed and "not valid JSON" in message


def test_the_committed_demo_report_passes_the_floors():
    passed, message = check_report(ROOT / "docs" / "demo" / "report.json")
    assert passed, message


def test_ci_runs_the_demo_check_after_the_readme_test_command():
    steps = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip().startswith("make ")]
    assert "make test" in steps and "make demo-check" in steps
    assert steps.index("make test") < steps.index("make demo-check")
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo-check:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe and "unimm demo-check" in recipe.group(1), "make demo-check must run `unimm demo-check`"
    assert "demo" in recipe.group(0).splitlines()[0], "make demo-check must depend on make demo"
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "demo-check" in readme
