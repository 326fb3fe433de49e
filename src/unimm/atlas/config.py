"""The atlas TOML: which strategies, layer kinds, sizes, seeds and budgets to sweep, how to evaluate them, and
which published findings to check (each check's metric and expected direction are declared before the runs).

Paths (presets, tokenizer config, data) are relative to the working directory, as for ``unimm train``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from unimm.atlas.metrics import HIGHER_IS_BETTER, WRITER_UNITS
from unimm.config import ConfigError, _format
from unimm.settings import LAYERS, READERS, TEXT, WRITERS, Registry

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# the four strategy axes of docs/architecture.md and the registry of each one's kinds
AXES: dict[str, Registry] = {"writer.kind": WRITERS, "reader.kind": READERS, "layers.kind": LAYERS, "text.kind": TEXT}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetSection(_Strict):
    """Exactly one of ``flops`` (counted FLOPs) or ``wall_s`` (seconds); a list gives several budgets, each a run
    of its own. ``regime`` says what the budget pays for (docs/atlas.md, "The ledger"): ``scratch``, everything
    that goes into a run's model (its preparation, then training steps with what is left); ``pretrained``, the
    training steps only, every part's preparation (VAE / VQ fit, ViT and decoder pre-training) getting the same
    ``side_flops`` of its own before, reported as a line of its own."""

    flops: list[float] | None = Field(None, description="FLOPs per run (FlopCounterMode's count)")
    wall_s: list[float] | None = Field(None, description="seconds per run")
    regime: Literal["scratch", "pretrained"] = Field("scratch", description="what the budget pays for")
    side_flops: float | None = Field(
        None, gt=0, description="pretrained: FLOPs of each part's preparation, priced per step, the same for all"
    )
    shared_tokenizer: Literal["charged", "separate"] = Field(
        "charged", description="the shared VQ tokenizer: charged in full to every run that uses it, or one line"
    )
    ladder: bool = Field(
        False,
        description="one warmup-stable-decay run per cell and seed to the largest budget, the smaller budgets "
        "cooldown branches forked from it (docs/scaling.md); False: a run of its own per budget",
    )
    cooldown: float = Field(0.2, gt=0, lt=1, description="ladder: the fraction of each budget's steps that decays")
    cooldown_shape: Literal["linear", "sqrt"] = Field("sqrt", description="ladder: the decay's shape")
    measure_steps: int = Field(3, gt=0, description="real training steps measured to price one step")
    checkpoints: int = Field(4, gt=0, description="checkpoints per run (an interrupted run resumes from the last)")

    @field_validator("flops", "wall_s", mode="before")
    @classmethod
    def _listify(cls, v):
        return v if v is None or isinstance(v, list) else [v]

    @model_validator(mode="after")
    def _one_kind(self) -> BudgetSection:
        if (self.flops is None) == (self.wall_s is None):
            raise ValueError("[budget] needs exactly one of flops or wall_s")
        if any(v <= 0 for v in self.values):
            raise ValueError("[budget] values must be positive")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"[budget] values must be distinct, got {self.values}")
        return self

    @property
    def kind(self) -> str:
        return "flops" if self.flops is not None else "wall_s"

    @property
    def values(self) -> list[float]:
        return list(self.flops if self.flops is not None else self.wall_s)


class EvalSection(_Strict):
    """``unimm eval``'s harness on every run: a suite of ``eval/harness.py`` with optional overrides."""

    suite: str = "atlas"
    seed: int = Field(0, description="one seed for every run, so every run gets the same prompts and noise")
    understand_n: int | None = Field(None, gt=0)
    per_class: int | None = Field(None, gt=0)
    prompts_n: int | None = Field(None, gt=0)
    batch_size: int | None = Field(None, gt=0)
    classifier_steps: int | None = Field(None, gt=0)
    clip_steps: int | None = Field(None, gt=0)
    rank: bool | None = Field(None, description="rank the class captions by likelihood (rank_accuracy, caption_nll)")
    heldout: bool | None = Field(None, description="the writer's held-out image loss (heldout_image_loss)")
    step_sweep: list[PositiveInt] | None = Field(
        None, description="quality per inference step: sampler step counts to generate at again (sorted, unique)"
    )
    step_sweep_per_class: int | None = Field(None, gt=0, description="images per class at each step count")
    edits_n: int | None = Field(None, gt=0, description="a strategy's 'edit' suite: held-out edits scored")
    interleaved_n: int | None = Field(None, gt=0, description="a strategy's 'interleaved' suite: tasks scored")
    clips_n: int | None = Field(None, gt=0, description="a video dataset: held-out clips generated and understood")

    @field_validator("step_sweep")
    @classmethod
    def _sorted_steps(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or v != sorted(set(v))):
            raise ValueError(f"step counts must be sorted and unique (and at least one), got {v}")
        return v

    def overrides(self) -> dict[str, int | bool | list[int]]:
        return {k: v for k, v in self.model_dump(exclude={"suite", "seed"}).items() if v is not None}


class TokenizerSection(_Strict):
    """One VQ tokenizer (``unimm tokenizer train``) shared by every VQ run of the same data, trained first."""

    config: str = "configs/tok/vq.toml"
    steps: int | None = Field(None, gt=0, description="fit steps (scratch; 1000 when unset); pretrained: side_flops")
    set: list[str] = []

    def fit_steps(self) -> int:
        return self.steps or 1000


class StrategyEntry(_Strict):
    name: str = Field(description="label in run names and the report")
    preset: str = Field(description="TOML preset, e.g. configs/chameleon.toml")
    set: list[str] = Field([], description="--set overrides for this strategy")
    layers: list[str] | None = Field(None, description="layer kinds for this strategy; None = the atlas's")
    seeds: list[int] | None = Field(None, description="seeds for this strategy; None = the atlas's")
    data: str | None = Field(
        None,
        description="data.path for this strategy's runs; None = the atlas's. A strategy listed again on another "
        "dataset (a name of its own) puts that dataset beside the first; cells pair only within a dataset",
    )
    regime: Literal["scratch", "pretrained"] | None = Field(
        None,
        description="what this strategy's budget pays for; None = [budget] regime. A strategy listed twice (two "
        "names), once per regime, shows what the ledger's choice does to it; cells pair only within a regime",
    )
    sizes: list[str] | None = Field(None, description="names of [sizes] this strategy trains at; None = all of them")
    budgets: list[float] | None = Field(None, description="the [budget] values this strategy trains at; None = all")
    ladder: bool | None = Field(
        None, description="a ladder of cooldown branches ([budget] ladder); None = the atlas's; false: own runs"
    )
    control_of: str | None = Field(
        None,
        description="this entry repeats another strategy's runs with its preset's own schedule (ladder = false) at "
        "some of its budgets: the report checks that the cooldown branches match these dedicated runs",
    )
    suites: list[Literal["edit", "interleaved"]] = Field(
        [],
        description="further evaluations of this strategy's runs beside [eval]'s suite (atlas/further.py): 'edit' "
        "(on an edit dataset: edit_accuracy, edit_preservation, edit_both) and 'interleaved' (digits or shapes: "
        "slot_accuracy, interleaved_task_accuracy, interleaved_consistency); their metrics are atlas metrics",
    )


class CheckEntry(_Strict):
    """A published directional finding, declared before the runs: matched pairs of cells that differ only in
    ``axis`` (kinds ``a`` vs kinds ``b``) are compared on ``metric``, and the literature says ``better`` wins."""

    source: str = Field(description="the publication, e.g. 'Janus (Wu et al. 2024, arXiv 2410.13848)'")
    statement: str = Field(description="the finding in words")
    axis: Literal["writer.kind", "reader.kind", "layers.kind", "text.kind"]
    a: list[str] = Field(min_length=1, description="kinds on the axis of side A")
    b: list[str] = Field(min_length=1, description="kinds on the axis of side B")
    metric: str = Field(description="the one metric the verdict is about (its direction is the metric's own)")
    better: Literal["a", "b"] = Field(description="the side the literature says is better on the metric")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in HIGHER_IS_BETTER:
            raise ValueError(f"unknown metric {v!r}; use one of {sorted(HIGHER_IS_BETTER)}")
        return v

    @model_validator(mode="after")
    def _known_kinds(self) -> CheckEntry:
        kinds = AXES[self.axis].kinds()
        unknown = [k for k in self.a + self.b if k not in kinds]
        if unknown:
            raise ValueError(f"unknown {self.axis} value(s) {unknown}; use one of {kinds}")
        if set(self.a) & set(self.b):
            raise ValueError(f"sides a and b share {sorted(set(self.a) & set(self.b))}")
        if self.metric in WRITER_UNITS and self.axis == "writer.kind":
            raise ValueError(f"{self.metric} is in each writer's own unit: it compares runs of one writer kind, "
                             "not across writer.kind")  # fmt: skip
        return self

    @property
    def expects_b(self) -> bool:
        return self.better == "b"


class AtlasConfig(_Strict):
    name: str = "atlas"
    description: str = ""
    seeds: list[int] = Field([0], min_length=1)
    jobs: int = Field(1, gt=0, description="runs in parallel (the CLI's --jobs wins)")
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$", description="auto = cuda when available")
    data: str | None = Field(None, description="data.path for every run, its tokenizer and its evaluators")
    set: list[str] = Field([], description="--set overrides for every run (before the strategy's own)")
    layers: list[str] = Field(["preset"], min_length=1, description="layer kinds; preset = the preset's own")
    sizes: dict[str, list[str]] = Field({"preset": []}, min_length=1, description="size name -> overrides")
    budget: BudgetSection
    eval: EvalSection = EvalSection()
    tokenizer: TokenizerSection | None = None
    strategies: list[StrategyEntry] = Field(min_length=1)
    checks: list[CheckEntry] = Field([], description="published findings checked; one Holm family per report")
    left_out: list[str] = Field(
        [], description="strategies of the TOML not in this run of it (set by `only`, the CLI's --only)"
    )

    @model_validator(mode="after")
    def _names_and_kinds(self) -> AtlasConfig:
        names = [s.name for s in self.strategies] + list(self.sizes)
        bad = [n for n in names if not _NAME.match(n)]
        if bad:
            raise ValueError(f"names must be lower-case letters, digits, '-' or '_': {bad}")
        if len({s.name for s in self.strategies}) != len(self.strategies):
            raise ValueError("strategy names must be unique")
        pretrained = "pretrained" in self.regimes
        if pretrained != (self.budget.side_flops is not None):
            raise ValueError(
                "[budget] side_flops is the pretrained regime's side budget: set it with (only with) a pretrained "
                "regime ([budget] regime or a strategy's regime)"
            )
        if pretrained and self.tokenizer is not None and self.tokenizer.steps is not None:
            raise ValueError("[tokenizer] steps: the pretrained regime sets them from [budget] side_flops")
        for s in self.strategies:
            unknown_sizes = [n for n in s.sizes or [] if n not in self.sizes]
            if unknown_sizes:
                raise ValueError(
                    f"strategy {s.name!r}: unknown size(s) {unknown_sizes}; [sizes] has {list(self.sizes)}"
                )
            unknown_budgets = [v for v in s.budgets or [] if v not in self.budget.values]
            if unknown_budgets:
                raise ValueError(
                    f"strategy {s.name!r}: budgets {unknown_budgets} are not in [budget] {self.budget.values}"
                )
            if s.control_of is not None:
                self._check_control(s)
        for kinds in [self.layers] + [s.layers for s in self.strategies if s.layers]:
            unknown = [k for k in kinds if k != "preset" and k not in LAYERS.kinds()]
            if unknown:
                raise ValueError(f"unknown layer kind(s) {unknown}; use preset or one of {LAYERS.kinds()}")
        return self

    def _check_control(self, s: StrategyEntry) -> None:
        """A control repeats its strategy's runs (same preset, settings, data, regime, layers, sizes, seeds
        covered) with dedicated runs instead of cooldown branches."""
        named = {x.name: x for x in self.strategies}
        if s.control_of not in named:
            raise ValueError(f"strategy {s.name!r}: control_of {s.control_of!r} names no strategy")
        of = named[s.control_of]
        if not self.ladder_of(of) or self.ladder_of(s):
            raise ValueError(f"strategy {s.name!r}: a control trains dedicated runs (ladder = false) of a strategy "
                             f"that trains a ladder ({s.control_of!r} does not)")  # fmt: skip
        same = ("preset", "set", "data", "regime", "layers")
        differ = [k for k in same if getattr(s, k) != getattr(of, k)]
        if differ:
            raise ValueError(f"strategy {s.name!r} is the control of {of.name!r} but differs in {differ}: it may "
                             "differ only in its schedule")  # fmt: skip

    def only(self, names: list[str]) -> AtlasConfig:
        """The atlas with only the strategies ``names`` (the CLI's ``--only``): a column run and reported on its
        own; a control comes with the strategy it controls or not at all."""
        known = [s.name for s in self.strategies]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise ValueError(f"--only: unknown strategy name(s) {unknown or names}; the atlas has {known}")
        kept = [s for s in self.strategies if s.name in names]
        orphans = [s.name for s in kept if s.control_of is not None and s.control_of not in names]
        if orphans:
            raise ValueError(f"--only: {orphans} control(s) a strategy left out; name it too")
        left = [n for n in known if n not in names]
        return self.model_copy(update={"strategies": kept, "left_out": [*self.left_out, *left]})

    def ladder_of(self, s: StrategyEntry) -> bool:
        """Whether strategy ``s`` trains cooldown branches of one run (needs two budgets or more)."""
        ladder = self.budget.ladder if s.ladder is None else s.ladder
        return ladder and len(s.budgets or self.budget.values) > 1

    @property
    def regimes(self) -> set[str]:
        """Every regime a run of the atlas uses."""
        return {s.regime or self.budget.regime for s in self.strategies}


def load_atlas(path: str | Path) -> AtlasConfig:
    """Read and validate an atlas TOML; errors name the key (``ConfigError``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"atlas config not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    try:
        return AtlasConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: " + _format(err, AtlasConfig)) from None
