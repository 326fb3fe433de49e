"""Further evaluations of an atlas run beside ``[eval]``'s harness suite (a strategy's ``suites``): ``edit`` (an edit
dataset: edit accuracy, preservation, ``eval/editing.py``) and ``interleaved`` (digits or shapes: slot accuracy,
task accuracy, consistency, ``eval/interleaving.py``). Each adds its section to the run's ``eval.json``, where
``atlas/metrics.py`` reads its numbers as atlas metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from unimm.eval.editing import evaluate_edits
from unimm.eval.interleaving import evaluate_interleaved
from unimm.eval.suites import Suite

# suite name -> (the eval.json section it writes, the evaluation)
FURTHER: dict[str, tuple[str, Callable[..., dict[str, Any]]]] = {
    "edit": ("editing", evaluate_edits),
    "interleaved": ("interleaved", evaluate_interleaved),
}


def further_sections(model, names: Sequence[str], suite: Suite, seed: int) -> dict[str, Any]:
    """The eval.json sections of the evaluations ``names`` of ``model`` on its own data, with ``suite``'s sizes
    (``edits_n``, ``interleaved_n``, ...) and ``seed``."""
    out = {}
    for name in names:
        if name not in FURTHER:
            raise ValueError(f"unknown further evaluation {name!r}; expected one of {', '.join(FURTHER)}")
        section, evaluate = FURTHER[name]
        out[section] = evaluate(model, suite, seed=seed)[section]
    return out
