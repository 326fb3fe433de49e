"""Where a result came from: the code's git commit, hashes of the source and the resolved config, the
software and machine, the date.

Every ``report.json`` and ``eval.json`` that ``unimm reports`` commits carries this block, so a number in
the docs names the code and the settings that produced it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

PACKAGE = Path(__file__).resolve().parent
# what decides a run's numbers; docs/ (rewritten by `make reports` while it runs) does not make a tree dirty
RESULT_PATHS = ("src", "configs", "pyproject.toml")


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(root: str | Path | None = None) -> dict[str, Any]:
    """{commit: 40 hex digits or "unknown", dirty: uncommitted changes under ``RESULT_PATHS``, None when
    unknown} of the checkout that holds this package (or of ``root``). An installed copy of the package is
    "unknown" even inside some repository (a virtualenv in a checkout): that repository is not its source."""
    own = root is None
    top = _git(PACKAGE.parents[1] if own else Path(root), "rev-parse", "--show-toplevel")
    if top is None or (own and (Path(top) / "src" / "unimm").resolve() != PACKAGE):
        return {"commit": "unknown", "dirty": None}
    status = _git(Path(top), "status", "--porcelain", "--", *RESULT_PATHS)
    return {
        "commit": _git(Path(top), "rev-parse", "HEAD") or "unknown",
        "dirty": None if status is None else bool(status),
    }


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes (a run's resolved ``config.toml``: the config hash)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def source_hash() -> str:
    """SHA-256 over the relative names and bytes of the package's Python files: identifies the code even
    when the tree is dirty or outside git."""
    h = hashlib.sha256()
    for f in sorted(PACKAGE.rglob("*.py")):
        h.update(f.relative_to(PACKAGE).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


TRAINED_ON = "trained_on.json"  # in a run directory: the code each training session ran


def code_state() -> dict[str, Any]:
    """The code this process runs, as of now: git commit and dirty flag, source hash, date."""
    return {
        **git_state(),
        "source_sha256": source_hash(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def record_training_code(run_dir: str | Path, step: int, state: dict[str, Any] | None = None) -> None:
    """Append the code a training session of ``run_dir`` starts on (at ``step``) to its ``trained_on.json``: a
    report written later, after a ``git pull`` or an edit, still names the code that produced the weights.
    ``state``: ``code_state()`` taken when the process started (default: now); a session records it only after
    its preparation (a codec fit of minutes), during which the tree may have moved on."""
    path = Path(run_dir) / TRAINED_ON
    sessions = json.loads(path.read_text()) if path.is_file() else []
    sessions.append({"from_step": step, **(state or code_state())})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(sessions, indent=1) + "\n")
    os.replace(tmp, path)


def training_code(run_dir: str | Path) -> list[dict[str, Any]] | None:
    """The sessions of ``record_training_code`` (None for a run trained before they were recorded)."""
    path = Path(run_dir) / TRAINED_ON
    return json.loads(path.read_text()) if path.is_file() else None


def provenance(config_toml: str | Path, wall_s: dict[str, float | None], command: str | None = None) -> dict:
    """The provenance block of a result computed from the run whose resolved config is ``config_toml``;
    ``wall_s`` holds the wall times (seconds) of its phases, ``command`` the command line that ran it.
    ``commit`` / ``dirty`` / ``source_sha256`` are the code that trained the run when it recorded it (the first
    training session; ``trained_on`` lists every session) and ``evaluated_on`` the code running now, so a
    tree that changed between training and the report is visible (``same_code`` False)."""
    now = code_state()
    sessions = training_code(Path(config_toml).parent)
    trained = sessions[0] if sessions else now
    same = all(s["source_sha256"] == now["source_sha256"] for s in sessions) if sessions else None
    return {
        "commit": trained["commit"],
        "dirty": trained["dirty"],
        "source_sha256": trained["source_sha256"],
        "trained_on": sessions,
        "evaluated_on": now,
        "same_code": same,
        "config_sha256": file_hash(config_toml),
        "wall_s": wall_s,
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
    }


def command_line() -> str:
    """This process's command line as ``unimm ...`` (argv[0] is a script path or ``-m``'s module file)."""
    return shlex.join(["unimm", *sys.argv[1:]])
