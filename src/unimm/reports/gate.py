"""The demo's floors: the numbers CI requires of a fresh ``make demo`` (``unimm demo-check``).

A gate reads the demo's ``report.json`` and names every metric below its floor in one line, so a red CI run
says what fell and by how much, e.g. ``demo check failed: caption accuracy 41.2 % < 95.0 %``. A video demo's
report (``"kind": "video"``, video_demo.py) is held to the video floors of issue 18 instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (label, path into report.json, floor): what `.ci/run` holds every fresh demo to (README "Results of the demo")
FLOORS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("caption accuracy", ("eval", "understanding", "caption_accuracy"), 0.95),
    ("generated accuracy", ("eval", "generation", "prompt_accuracy"), 0.95),
)
# a video demo's (issue 18): per-frame prompt accuracy, motion direction from pixels, the direction question
VIDEO_FLOORS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("per-frame prompt accuracy", ("eval", "generation", "frame_prompt_accuracy"), 0.90),
    ("motion accuracy", ("eval", "generation", "motion_accuracy"), 0.80),
    ("direction QA accuracy", ("eval", "understanding", "direction_vqa_accuracy"), 0.90),
)


def floors_of(report: dict[str, Any]) -> tuple[tuple[str, tuple[str, ...], float], ...]:
    """The floor table for this report's kind: VIDEO_FLOORS for a video demo, FLOORS for an image one."""
    return VIDEO_FLOORS if report.get("kind") == "video" else FLOORS


def _lookup(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = report
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def shortfalls(report: dict[str, Any], floors: dict[str, float] | None = None) -> list[str]:
    """One phrase per metric under its floor (``floors`` overrides the defaults by label); [] when all pass.
    A metric missing from the report is a shortfall too: a gate that cannot read the number must not pass."""
    table = floors_of(report)
    limits = {label: floor for label, _, floor in table} | (floors or {})
    unknown = set(limits) - {label for label, _, _ in table}
    if unknown:
        kind = report.get("kind", "image")
        raise ValueError(
            f"{kind} demo report has no metric {', '.join(sorted(unknown))}; its floors: {', '.join(_labels(table))}"
        )
    out = []
    for label, path, _ in table:
        value, floor = _lookup(report, path), limits[label]
        if not isinstance(value, (int, float)):
            out.append(f"{label} missing from the report ({'.'.join(path)})")
        elif value < floor:
            out.append(f"{label} {100 * value:.1f} % < {100 * floor:.1f} %")
    return out


def check_report(path: Path, floors: dict[str, float] | None = None) -> tuple[bool, str]:
    """(passed, one-line message) for the demo report at ``path`` (``report.json`` or its run directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report" / "report.json" if (path / "report").is_dir() else path / "report.json"
    if not path.is_file():
        return False, f"demo check failed: no report at {path} (did `make demo` finish?)"
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return False, f"demo check failed: {path} is not valid JSON ({err})"
    try:
        failed = shortfalls(report, floors)
    except ValueError as err:
        return False, f"demo check failed: {err} ({path})"
    if failed:
        return False, f"demo check failed: {'; '.join(failed)} ({path})"
    values = ", ".join(f"{label} {100 * _lookup(report, p):.1f} %" for label, p, _ in floors_of(report))
    return True, f"demo check passed: {values} ({path})"


def _labels(table: tuple[tuple[str, tuple[str, ...], float], ...] = FLOORS) -> list[str]:
    return [label for label, _, _ in table]
