"""Read what the runs left on disk into one flat row per run, and group the rows of a cell over seeds."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unimm.atlas.charges import settings
from unimm.atlas.ledger import RunLedger
from unimm.atlas.metrics import METRICS, metric_value
from unimm.atlas.plan import PlannedRun


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _metrics_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in rows if "loss" in r]


def task_loss(row: dict[str, Any], config: dict[str, Any]) -> float | None:
    """The training objective without the routers' auxiliary terms, comparable across layer kinds."""
    if "text_loss" not in row or "image_loss" not in row:
        return None
    return config["text"]["weight"] * row["text_loss"] + config["writer"]["weight"] * row["image_loss"]


@dataclass
class RunResult:
    run: PlannedRun
    folder: Path
    status: str  # done | failed | missing
    values: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # steps, FLOPs, params, times, memory, failure
    curve: list[tuple[float, float]] = field(default_factory=list)  # (train_flops, task loss) per logged row
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl
    ledger: RunLedger | None = None  # ledger.json against the atlas's [budget] settings


def load_result(run: PlannedRun, folder: Path) -> RunResult:
    done, failed = (folder / "atlas_done.json").is_file(), _json(folder / "atlas_failed.json")
    status = "done" if done else "failed" if failed else "missing"
    result = RunResult(run, folder, status)
    ev, budget, train = _json(folder / "eval" / "eval.json"), _json(folder / "budget.json"), _json(
        folder / "atlas_train.json"
    )  # fmt: skip
    result.rows = _metrics_rows(folder / "metrics.jsonl")
    config = run.config
    result.curve = [(r["train_flops"], loss) for r in result.rows if "train_flops" in r and
                    (loss := task_loss(r, config)) is not None]  # fmt: skip
    if result.rows:
        tail = [task_loss(r, config) for r in result.rows[-5:]]
        tail = [x for x in tail if x is not None]
        if tail:
            result.values["task_loss"] = sum(tail) / len(tail)  # the last 5 logged rows: less batch noise
    info = result.info
    if failed:
        info["failure"] = f"{failed['phase']} exited with {failed['returncode']}; see {failed['log']}"
    if budget:
        info.update(steps=budget["steps"], expected_flops=budget["expected_flops"])
    ledger = _json(folder / "ledger.json")
    if ledger is not None:
        result.ledger = RunLedger.read(ledger, settings(run.spec()))
    if train:
        info.update(
            train_wall_s=train.get("wall_s"), peak_train_mib=train.get("peak_cuda_mib") or train.get("peak_rss_mib")
        )
        last = result.rows[-1] if result.rows else {}
        if len(train.get("sessions", [])) == 1 and last.get("tokens") and last.get("tokens_per_s"):
            info["loop_s"] = last["tokens"] / last["tokens_per_s"]  # the training loop alone, without preparation
    if ev:
        for name in METRICS:
            if (v := metric_value(ev, name)) is not None:
                result.values[name] = v
        info["fid_ci"] = ev.get("generation", {}).get("fid_ci")  # the FID's bootstrap interval (eval/distribution.py)
        cost = ev["cost"]
        t = cost.get("training", {})
        info.update(
            params_total=cost["params"]["total"],
            params_active=cost["params"]["active"],
            peak_eval_mib=(_json(folder / "eval" / "atlas_eval.json") or {}).get("peak_mib"),
            train_flops=t.get("train_flops"),
            trained_steps=t.get("step"),
            flops_per_caption=cost.get("inference", {}).get("flops_per_caption"),
            flops_per_image=cost.get("inference", {}).get("flops_per_image"),
            step_sweep=ev.get("generation", {}).get("step_sweep"),
        )
    elif result.rows and "train_flops" in result.rows[-1]:
        info["train_flops"] = result.rows[-1]["train_flops"]
    return result


@dataclass
class Stat:
    """A metric of one cell over its seeds: mean, sample standard deviation (0 with one seed), values."""

    values: list[float]
    seeds: list[int] = field(default_factory=list)  # the training seed of each value, when known

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    def text(self, digits: int = 3) -> str:
        if self.n == 1:
            return f"{self.mean:.{digits}f} (1 seed)"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f} ({self.n} seeds)"


@dataclass
class Cell:
    """The finished runs of one strategy / layer kind / size at one budget, over seeds."""

    key: str  # strategy/layers/size
    budget: str
    results: list[RunResult]

    @property
    def first(self) -> RunResult:
        return self.results[0]

    @property
    def label(self) -> str:
        return f"{self.key} @ {self.budget}"

    def stat(self, metric: str) -> Stat | None:
        runs = [r for r in self.results if metric in r.values]
        return Stat([r.values[metric] for r in runs], [r.run.seed for r in runs]) if runs else None

    def info_mean(self, key: str) -> float | None:
        vals = [r.info[key] for r in self.results if r.info.get(key) is not None]
        return sum(vals) / len(vals) if vals else None


def group_cells(results: list[RunResult]) -> list[Cell]:
    """Finished runs grouped by cell and budget, in plan order."""
    cells: dict[tuple[str, str], Cell] = {}
    for r in results:
        if r.status == "done":
            key = (r.run.cell, r.run.budget_name)
            cells.setdefault(key, Cell(*key, [])).results.append(r)
    return list(cells.values())
