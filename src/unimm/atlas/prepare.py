"""What the runs share, made once before they start: the VQ tokenizer of the VQ runs and the evaluators.

The shared tokenizer's fit is counted (its ``ledger.json``) and charged to every run that uses it, or reported
as a line of its own (``[budget] shared_tokenizer``); its steps are ``[tokenizer] steps`` in the scratch regime
and are priced from ``side_flops`` in the pretrained one (``atlas/side.py``). The evaluators (classifier, CLIP)
measure the runs and go into no model: they are outside every budget, trained here with the suite's recipe into
the harness's cache, so parallel runs find them instead of each training them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rich.console import Console

from unimm.atlas.config import AtlasConfig, EvalSection
from unimm.atlas.plan import PlannedRun
from unimm.config import TokenizerConfig, load_config


def eval_suite(ev: EvalSection | dict):
    """The harness ``Suite`` named in ``[eval]`` with its overrides applied."""
    from unimm.eval.suites import SUITE_NAMES, SUITES, Suite

    ev = ev if isinstance(ev, dict) else {"suite": ev.suite, "overrides": ev.overrides()}
    if ev["suite"] not in SUITES:
        raise ValueError(f"[eval] suite = {ev['suite']!r} is not one of {SUITE_NAMES}")
    overrides = dict(ev["overrides"])
    if "step_sweep" in overrides:  # a list in TOML and JSON, a tuple in the (frozen) suite
        overrides["step_sweep"] = tuple(overrides["step_sweep"])
    return Suite(**{**SUITES[ev["suite"]].__dict__, **overrides})


def _slug(path: str, size: int | None, steps: int) -> str:
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:8]
    return f"vq-{Path(path).name}-{size or 'native'}-{steps}steps-{digest}"


def _config(atlas: AtlasConfig, path: str, size: int | None, channels: int | None, steps: int) -> TokenizerConfig:
    t = atlas.tokenizer
    overrides = [f"data.path={json.dumps(path)}", f"train.steps={steps}", *t.set]
    overrides += [f"data.image_size={size}"] if size else []
    overrides += [f"data.channels={channels}"] if channels else []
    return load_config(t.config, overrides, schema=TokenizerConfig)


def tokenizer_steps(atlas: AtlasConfig, path: str, size: int | None, channels: int | None) -> int:
    """``[tokenizer] steps``, or, when a strategy uses the pretrained regime, the steps that spend ``side_flops``
    (scratch runs beside it load the same tokenizer and pay its FLOPs from their budget)."""
    from unimm.atlas.side import side_steps, tokenizer_step_price

    if atlas.budget.side_flops is None:
        return atlas.tokenizer.fit_steps()
    price = tokenizer_step_price(_config(atlas, path, size, channels, 1))
    return side_steps({"tokenizer.steps": price}, atlas.budget.side_flops)["tokenizer.steps"]


def shared_tokenizers(atlas: AtlasConfig, runs: list[PlannedRun], out: Path, console: Console) -> dict[tuple, str]:
    """Train (or reuse) one VQ tokenizer per dataset of the VQ runs without their own; data key -> directory."""
    from unimm.tokenizers.train import train_tokenizer

    if atlas.tokenizer is None:
        return {}
    found = {}
    for path, size, channels in sorted({r.data_key() for r in runs if r.uses_shared_tokenizer()}, key=str):
        steps = tokenizer_steps(atlas, path, size, channels)
        folder = out / "tokenizers" / _slug(path, size, steps)
        if not (folder / "tokenizer.safetensors").is_file() or not (folder / "ledger.json").is_file():
            console.print(f"shared VQ tokenizer for {path}: {steps} steps -> {folder}")
            result = train_tokenizer(_config(atlas, path, size, channels, steps), folder, progress=False)
            flops = json.loads((folder / "ledger.json").read_text())["total"]
            console.print(f"  validation PSNR {result['val']['psnr']:.2f} dB, {flops:.3g} FLOPs")
        found[(path, size, channels)] = str(folder.resolve())
    return found


def prepare_evaluators(suite, runs: list[PlannedRun], console: Console) -> None:
    """Train the harness's classifier and CLIP for every dataset the runs use (cached: a no-op when done); for a
    video dataset the frame classifier and the clip evaluator of ``eval/video.py``."""
    from unimm.data import load_split
    from unimm.eval.classifier import load_or_train_classifier
    from unimm.eval.clip import load_or_train_clip
    from unimm.eval.clip_evaluator import load_or_train_clip_evaluator
    from unimm.eval.harness import default_cache

    cache = default_cache()
    keys = {(*r.data_key(), tuple(r.config["data"].get("class_names") or ())) for r in runs}
    for path, size, channels, named in sorted(keys, key=str):
        names = list(named) or None  # data.class_names, else the dataset's own
        train = load_split(path, "train", size, channels, names)
        size, channels = int(train.images.shape[-1]), int(train.images.shape[-3])  # as the run resolves them
        test = load_split(path, "test", size, channels, names)
        console.print(f"evaluators for {path} ({size}x{size}, {channels} channel(s)) in {cache}")
        if bool(test.class_names) and bool((test.labels >= 0).any()):
            load_or_train_classifier(path, "train", size, channels, cache / "classifiers", steps=suite.classifier_steps)
        if train.frames:  # eval/video.py's FVD-style features (no CLIP score for clips)
            if suite.distribution:
                load_or_train_clip_evaluator(
                    path, size, channels, cache / "clip_evaluators", steps=suite.classifier_steps
                )
            continue
        load_or_train_clip(path, "train", size, channels, cache / "clip", steps=suite.clip_steps, class_names=names)
