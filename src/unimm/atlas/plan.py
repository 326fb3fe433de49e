"""The atlas's run list: strategies x layer kinds x sizes x budgets x seeds, each with a stable directory name."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from unimm.atlas.config import AtlasConfig
from unimm.config import ConfigError, load_config
from unimm.data.edit_store import is_edit_dataset
from unimm.data.video_store import is_video_dataset


def budget_label(kind: str, value: float) -> str:
    """``3e13flops`` / ``120s``: the budget as it appears in run names."""
    if kind == "flops":
        return f"{value:.3g}".replace("e+", "e") + "flops"
    return f"{value:g}s"


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the atlas; ``overrides`` are the ``--set`` strings applied to ``preset``."""

    strategy: str
    layers: str  # the layer kind the run trains with (the preset's own when the atlas says "preset")
    size: str
    budget_kind: str  # "flops" | "wall_s"
    budget: float
    seed: int
    preset: str
    overrides: tuple[str, ...]
    config: dict[str, Any] = field(compare=False, hash=False, repr=False)  # resolved, before training
    regime: str = "scratch"  # what the budget pays for ([budget] regime)
    side_flops: float | None = None  # pretrained: each prepared part's side budget
    shared_tokenizer: str = "charged"  # a shared tokenizer: charged to the run, or a separate line
    branches: tuple[float, ...] = ()  # a ladder's stable run: the smaller budgets forked from it
    stable: str | None = None  # a cooldown branch: the name of the stable run it forks from
    control_of: str | None = None  # a dedicated run repeating this strategy's ladder run (same cell otherwise)
    suites: tuple[str, ...] = ()  # further evaluations beside the harness (atlas/further.py); not in the spec

    @property
    def cell(self) -> str:
        """Strategy / layer kind / size: the runs of one cell differ only by budget and seed."""
        return f"{self.strategy}/{self.layers}/{self.size}"

    @property
    def budget_name(self) -> str:
        return budget_label(self.budget_kind, self.budget)

    @property
    def name(self) -> str:
        return f"{self.strategy}.{self.layers}.{self.size}.{self.budget_name}.s{self.seed}"

    def spec(self) -> dict[str, Any]:
        """What defines the run (JSON): a run directory made from another spec is never resumed as this one."""
        ladder = {"ladder": {"branches": list(self.branches), "stable": self.stable}} if self.in_ladder else {}
        return {
            "name": self.name,
            "strategy": self.strategy,
            "layers": self.layers,
            "size": self.size,
            "budget": {"kind": self.budget_kind, "value": self.budget},
            "ledger": {"regime": self.regime, "side_flops": self.side_flops, "shared_tokenizer": self.shared_tokenizer},
            "seed": self.seed,
            "preset": self.preset,
            "overrides": list(self.overrides),
            **ladder,
        }

    @property
    def in_ladder(self) -> bool:
        """A ladder's stable run or one of its cooldown branches."""
        return bool(self.branches) or self.stable is not None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]

    def uses_shared_tokenizer(self) -> bool:
        """A VQ run that names no tokenizer of its own (it gets the atlas's shared one when configured)."""
        codec = self.config["codec"]
        return codec["kind"] == "vq" and codec["tokenizer"] is None

    @property
    def dataset(self) -> str:
        """The name of the run's data (its folder): cells are compared only on the same data."""
        return Path(self.config["data"]["path"]).name

    def data_key(self) -> tuple[str, int | None, int | None]:
        d = self.config["data"]
        return d["path"], d["image_size"], d["channels"]


def ladder_overrides(atlas: AtlasConfig) -> list[str]:
    """The warmup-stable-decay schedule every run of a ladder trains with."""
    b = atlas.budget
    return ['train.schedule="wsd"', f"train.cooldown={b.cooldown}", f'train.cooldown_shape="{b.cooldown_shape}"']


def plan_runs(atlas: AtlasConfig) -> list[PlannedRun]:
    """Every run of the atlas in a fixed order; each run's training config is validated here. In a ladder the
    largest budget's run is the stable run, and each smaller budget's run a cooldown branch of it."""
    runs: dict[str, PlannedRun] = {}
    for s in atlas.strategies:
        data = s.data or atlas.data
        common = list(atlas.set) + ([f"data.path={json.dumps(data)}"] if data else [])
        budgets = s.budgets or atlas.budget.values
        ladder = atlas.ladder_of(s)
        top = max(budgets)
        for size, size_set in atlas.sizes.items():
            if s.sizes is not None and size not in s.sizes:
                continue
            for kind in s.layers or atlas.layers:
                layers = [] if kind == "preset" else [f'layers={{kind = "{kind}"}}']  # the kind's own defaults
                base = common + list(s.set) + list(size_set) + layers + (ladder_overrides(atlas) if ladder else [])
                for value in atlas.budget.values:
                    if value not in budgets:
                        continue
                    for seed in s.seeds or atlas.seeds:
                        overrides = (*base, f"train.seed={seed}")
                        try:
                            cfg = load_config(s.preset, list(overrides))
                        except ConfigError as err:
                            raise ConfigError(f"strategy {s.name!r} ({s.preset}), size {size!r}: {err}") from None
                        if s.suites and is_video_dataset(cfg.data.path):  # edit / interleaved: image tasks
                            raise ConfigError(
                                f"strategy {s.name!r}: suites = {list(s.suites)} evaluate images, but data.path = "
                                f"{cfg.data.path} is a video dataset (its runs get the video metrics without them)"
                            )
                        if "edit" in s.suites and not is_edit_dataset(cfg.data.path):
                            raise ConfigError(
                                f"strategy {s.name!r}: suites has 'edit', but data.path = {cfg.data.path} is not an "
                                "edit dataset (make one with `python -m unimm.data.edits --out DIR`)"
                            )
                        run = PlannedRun(
                            strategy=s.name,
                            layers=cfg.layers.kind,
                            size=size,
                            budget_kind=atlas.budget.kind,
                            budget=value,
                            seed=seed,
                            preset=s.preset,
                            overrides=overrides,
                            config=cfg.model_dump(),
                            regime=s.regime or atlas.budget.regime,
                            side_flops=atlas.budget.side_flops,
                            shared_tokenizer=atlas.budget.shared_tokenizer,
                            branches=tuple(sorted(b for b in budgets if b != top)) if ladder and value == top else (),
                            control_of=s.control_of,
                            suites=tuple(s.suites),
                        )
                        if ladder and value != top:
                            stable = replace(run, budget=top, branches=tuple(sorted(b for b in budgets if b != top)))
                            run = replace(run, stable=stable.name)
                        runs.setdefault(run.name, run)
    return list(runs.values())
