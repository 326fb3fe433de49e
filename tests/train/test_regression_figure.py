"""A frozen regression figure: 100 steps of two tiny presets at a fixed seed, their loss curves held against a
committed reference (``regression_reference.json``) within a deliberately tight tolerance.

The determinism tests check that a run equals itself (resumed, sharded, re-seeded); this one checks that it
equals what it was yesterday. A change to the model, the data stream, the schedule, an init order or an RNG draw
moves the curve and fails here, so a change that moves training says so on purpose: regenerate the reference
with ``UNIMM_UPDATE_REFERENCE=1`` (below), say so in the commit message, and regenerate the reports.
"""

import json
import os
import platform
import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from conftest import ROOT, tiny_preset, tiny_preset_overrides
from unimm.train import train

REFERENCE = Path(__file__).with_name("regression_reference.json")
UPDATE_ENV = "UNIMM_UPDATE_REFERENCE"
UPDATE_CMD = f"{UPDATE_ENV}=1 python -m pytest {Path(__file__).resolve().relative_to(ROOT)}"
PRESETS = ("quick", "chameleon")  # the demo's continuous latents + flow, and discrete codes by next-token
METRICS = ("loss", "text_loss", "image_loss")
# beyond the tiny sizes of conftest: 100 steps, a point every 5; FLOPs are not counted (they cost time and are
# not part of the figure); one checkpoint, at the end
SETTINGS = {"train.steps": 100, "train.log_every": 5, "train.save_every": 100, "train.flops_every": 0}
# Same machine, same torch, fp32, one thread: a run repeats bit for bit (test_determinism.py), so the tolerance is
# only for another CPU, whose SIMD width and BLAS kernels sum in another order and differ in the last bits. Measured
# on unrounded curves here, emulating other CPUs (ATen's AVX2 or scalar kernels instead of AVX-512, MKL limited to
# SSE4.2, 2 threads instead of 1): at most 3e-6 relative over the 100 steps (chameleon's small image_loss; 3e-7 on
# the others). RTOL leaves a margin of 30x over that and still catches what a real change does: 1 % more learning
# rate moves the curve by 1e-3 relative within 5 steps (1e-2 later), 0.1 % by 1e-4 at step 5 (1e-3 later); a
# changed seed or one more draw before the model's init moves it by 10 % or more. What barely acts within 100 steps
# passes: 1 % more weight decay moves it by 3.5e-5. ATOL is one unit of the 5th decimal that metrics.jsonl rounds to
# (image_loss is 0 on a logged step whose batch generated no image).
RTOL = 1e-4
ATOL = 1e-5


def _settings(digits_dir: Path, preset: str) -> list[str]:
    """Every override that makes the run (the data path aside: a temporary directory)."""
    return [o for o in tiny_preset_overrides(digits_dir, preset, **SETTINGS) if not o.startswith("data.path=")]


def _curve(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{"step": r["step"], **{m: r.get(m) for m in METRICS}} for r in rows]


def _commit() -> str:
    """The commit the reference was produced on, "+ uncommitted changes" when the tree held changes besides the
    reference: as a rule those of the commit that updates the reference with them."""
    git = ["git", "-C", str(ROOT)]
    try:
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        status = [*git, "status", "--porcelain", "--", ".", f":!{REFERENCE.relative_to(ROOT)}"]
        dirty = subprocess.run(status, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} + uncommitted changes" if dirty.strip() else head


def _packages() -> dict[str, str]:
    """Versions besides torch's (which is checked) that may move the curve, named when a comparison fails:
    tokenizers trains the text tokenizer, numpy and scikit-learn make the data."""
    return {"python": platform.python_version(), **{p: version(p) for p in ("tokenizers", "numpy", "scikit-learn")}}


def _release(torch_version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: a CPU and a CUDA wheel of one release run the same CPU kernels."""
    return torch_version.split("+")[0]


def _write_reference(preset: str, settings: list[str], curve: list[dict]) -> None:
    ref = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {}
    ref["about"] = (
        f"Frozen loss curves of tests/train/test_regression_figure.py (rtol {RTOL}, atol {ATOL}). "
        f"Regenerate on purpose with `{UPDATE_CMD}`, say so in the commit message, and regenerate the reports."
    )
    ref.setdefault("presets", {})[preset] = {
        "torch": torch.__version__,
        "commit": _commit(),
        "packages": _packages(),
        "settings": settings,
        "curve": curve,
    }
    ref["presets"] = dict(sorted(ref["presets"].items()))
    # one curve point a line: an update reads as a diff of the points that moved
    text = json.dumps(ref, indent=1)
    text = re.sub(r"\{\n\s+(\"step\"[^{}]*?)\n\s+\}", lambda m: "{" + " ".join(m.group(1).split()) + "}", text)
    REFERENCE.write_text(text + "\n")


def _moved(ref: list[dict], new: list[dict]) -> list[tuple[float, int, str, float, float]]:
    """``(relative change, step, metric, reference, now)`` of every value outside the tolerance, in step order."""
    out = []
    for r, n in zip(ref, new, strict=True):
        for m in METRICS:
            a, b = r[m], n[m]
            if a is None or b is None:
                if a != b:
                    out.append((float("inf"), r["step"], m, a, b))
            elif abs(b - a) > RTOL * abs(a) + ATOL:
                out.append((abs(b - a) / max(abs(a), ATOL), r["step"], m, a, b))
    return out


@pytest.mark.parametrize("preset", PRESETS)
def test_loss_curve_matches_the_reference(digits_dir, tmp_path, preset):
    settings = _settings(digits_dir, preset)
    updating = os.environ.get(UPDATE_ENV) == "1"
    if not updating:  # the reference first: no point in training against nothing
        if not REFERENCE.exists():
            pytest.fail(f"no reference {REFERENCE.relative_to(ROOT)}: create it with `{UPDATE_CMD}` and commit it")
        entry = json.loads(REFERENCE.read_text()).get("presets", {}).get(preset)
        if entry is None:
            pytest.fail(f"{REFERENCE.name} has no curve for {preset!r}: add it with `{UPDATE_CMD}` and commit it")
        # another torch may change kernels or an init's draws: a failure could not be told from a change here
        if _release(entry["torch"]) != _release(torch.__version__):
            pytest.fail(
                f"{preset}: the reference was produced with torch {entry['torch']}, this is torch "
                f"{torch.__version__}; the figure is frozen for one torch (the Makefile's pin): run the tests with "
                f"that torch, or, when the pin moves, regenerate the reference on purpose with `{UPDATE_CMD}`"
            )
        if entry["settings"] != settings:
            was = [o for o in entry["settings"] if o not in settings]
            now = [o for o in settings if o not in entry["settings"]]
            pytest.fail(
                f"{preset}: the run's settings changed (reference: {', '.join(was) or '-'}; now: "
                f"{', '.join(now) or '-'}); if on purpose, regenerate the "
                f"reference with `{UPDATE_CMD}` and say so in the commit message"
            )

    curve = _curve(train(tiny_preset(digits_dir, preset, **SETTINGS), tmp_path / preset, progress=False))
    if updating:
        _write_reference(preset, settings, curve)
        return

    ref = entry["curve"]
    ref_steps, new_steps = [r["step"] for r in ref], [r["step"] for r in curve]
    assert new_steps == ref_steps, (
        f"{preset}: logged steps {new_steps}, reference {ref_steps} (a skipped step?); if on purpose, regenerate "
        f"the reference with `{UPDATE_CMD}`"
    )
    moved = _moved(ref, curve)
    if moved:
        rel, step, metric, a, b = moved[0]
        worst = max(moved)
        packages = _packages()
        also = [
            f"{p} {v} (now {packages.get(p)})" for p, v in entry.get("packages", {}).items() if packages.get(p) != v
        ]
        pytest.fail(
            f"{preset}: the loss curve moved: first at step {step}, {metric} = {b} (reference {a}, relative change "
            f"{rel:.1e} > rtol {RTOL:.0e}); {len(moved)} of {len(ref) * len(METRICS)} values outside the tolerance, "
            f"the largest at step {worst[1]} ({worst[2]}: {worst[4]}, reference {worst[3]}). The reference comes "
            f"from {entry['commit']}{'; it was made with ' + ', '.join(also) if also else ''}. "
            f"If this change is meant to move training, regenerate the reference on purpose "
            f"with `{UPDATE_CMD}`, say so in the commit message, and regenerate the reports."
        )


def test_the_tolerance_catches_a_small_move():
    """The comparison itself: one value moved by twice the tolerance is named, half of it is not."""
    ref = [{"step": s, "loss": 3.0, "text_loss": 2.0, "image_loss": 0.0} for s in (5, 10)]
    assert _moved(ref, ref) == []
    for factor, moved in ((1 + RTOL / 2, False), (1 + 2 * RTOL, True)):
        new = [dict(r) for r in ref]
        new[1]["text_loss"] *= factor
        assert [m[1:3] for m in _moved(ref, new)] == ([(10, "text_loss")] if moved else [])
    new = [dict(r) for r in ref]
    new[0]["image_loss"] = 2 * ATOL  # 0 in the reference: the absolute tolerance decides
    assert [m[1:3] for m in _moved(ref, new)] == [(5, "image_loss")]
