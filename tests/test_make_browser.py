"""The Makefile's browser targets: CI runs the browser test after the README's test command, and
``make browser-deps`` without apt-get (and without a browser) fails with one line saying what to do."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_browser_test_after_the_readme_test_command():
    steps = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip().startswith("make ")]
    assert steps.index("make test") < steps.index("make test-browser")


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_browser_deps_without_apt_fails_with_one_line(tmp_path):
    # an empty PATH: no chromium, no chromedriver, no apt-get (make and /bin/sh are run by absolute path)
    r = subprocess.run(
        [shutil.which("make"), "-s", "-C", str(ROOT), "browser-deps"],
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("make")]
    assert lines == ["browser-deps: apt-get not found; install Chromium and chromedriver yourself (both on PATH)"]
