"""Schedule x strategy interactions: does the difference between two controlled cells depend on the schedule?"""

import json
from types import SimpleNamespace

import pytest

from unimm.atlas.results import Cell
from unimm.atlas.schedule_check import ScheduleCheck, main, schedule_interactions


def _cell(key: str, values: list[float], dataset: str = "mnist") -> Cell:
    runs = [SimpleNamespace(run=SimpleNamespace(seed=s, dataset=dataset), values={"acc": v}) for s, v in
            enumerate(values)]  # fmt: skip
    return Cell(key, "6e12flops", runs)


def _checks(x_ded, x_br, y_ded, y_br, y_dataset="mnist"):
    return [ScheduleCheck(_cell("x-cos", x_ded), _cell("x", x_br), "acc"),
            ScheduleCheck(_cell("y-cos", y_ded, y_dataset), _cell("y", y_br, y_dataset), "acc")]  # fmt: skip


def test_a_schedule_that_moves_both_cells_alike_has_no_interaction():
    checks = _checks([0.40, 0.42, 0.38], [0.50, 0.52, 0.48], [0.60, 0.65, 0.61], [0.70, 0.75, 0.71])
    (it,) = schedule_interactions(checks)
    row = it.row()
    assert row["effect_dedicated"] == pytest.approx(0.22) and row["effect_branch"] == pytest.approx(0.22)
    assert row["same_sign"] and row["interaction"] == pytest.approx(0.0, abs=1e-12) and row["p"] == 1.0


def test_a_schedule_that_flips_the_difference_is_detected():
    checks = _checks([0.40, 0.42, 0.38], [0.70, 0.71, 0.69], [0.60, 0.61, 0.60], [0.50, 0.52, 0.49])
    row = schedule_interactions(checks)[0].row()
    assert row["effect_dedicated"] > 0 > row["effect_branch"] and not row["same_sign"]
    assert row["interaction"] == pytest.approx(-0.4 - 0.0033, abs=0.01) and row["p"] < 0.01
    assert row["ci"][1] < 0


def test_cells_on_other_data_or_with_one_seed_are_not_paired():
    assert schedule_interactions(_checks([0.4, 0.5], [0.5, 0.6], [0.6, 0.7], [0.7, 0.8], y_dataset="shapes")) == []
    (it,) = schedule_interactions(_checks([0.4], [0.5], [0.6], [0.7]))
    assert it.row() is None  # one shared seed: nothing to test


def test_the_command_rebuilds_both_tables_from_a_report(tmp_path, capsys):
    def run(name, v):
        return {"name": name, "status": "done", "values": {"acc": v}, "info": {}}

    runs = [run(f"{cell}.dense.tiny.6e12flops.s{s}", v) for cell, vals in
            {"a": [0.5, 0.6], "a-cosine": [0.4, 0.45], "b": [0.7, 0.9], "b-cosine": [0.6, 0.7]}.items()
            for s, v in enumerate(vals)]  # fmt: skip
    controls = [{"metric": "acc", "budget": "6e12flops", "dedicated": f"{c}-cosine/dense/tiny",
                 "branch": f"{c}/dense/tiny"} for c in ("a", "b")]  # fmt: skip
    (tmp_path / "report.json").write_text(json.dumps({"runs": runs, "schedule_controls": controls}))
    plan = [{"name": r["name"], "overrides": ['data.path="data/mnist"']} for r in runs]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    main([str(tmp_path / "report.json")])
    out = capsys.readouterr().out
    # b - a: +0.225 with the dedicated runs, +0.25 with the branches: +0.025 of interaction
    assert "| `b/dense/tiny` − `a/dense/tiny` @ 6e12flops | `acc` | +0.2250 | +0.2500 | yes | +0.0250 |" in out
    assert "| `a/dense/tiny` @ 6e12flops | `acc` | 0.4250 | 0.5500 | +0.1250 |" in out
