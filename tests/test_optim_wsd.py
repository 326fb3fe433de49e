"""The warmup-stable-decay schedule (``optim.warmup_stable_decay``), its fork steps and the steps branching
saves, hand-computed."""

import math

import pytest

from unimm.config import ConfigError, TrainSection, load_config
from unimm.optim import branching_steps, cooldown_steps, fork_step, warmup_cosine, warmup_stable_decay
from unimm.train.loop import lr_factor


def test_wsd_warms_up_holds_then_decays_linearly_to_the_min_ratio():
    f = warmup_stable_decay(warmup=2, total=10, cooldown=0.3, shape="linear", min_ratio=0.1)
    assert [f(0), f(1)] == [0.5, 1.0]  # warmup
    assert [f(i) for i in range(2, 8)] == [1.0] * 6  # stable, the decay's first step included (step 7)
    assert f(8) == pytest.approx(0.1 + 0.9 * 2 / 3)
    assert f(9) == pytest.approx(0.1 + 0.9 / 3)
    assert f(10) == pytest.approx(0.1) and f(12) == pytest.approx(0.1)


def test_wsd_sqrt_shape_is_one_minus_the_square_root_of_progress():
    f = warmup_stable_decay(warmup=0, total=8, cooldown=0.5, shape="sqrt", min_ratio=0.0)
    assert [f(i) for i in range(5)] == [1.0] * 5
    assert f(5) == pytest.approx(1 - math.sqrt(0.25))
    assert f(6) == pytest.approx(1 - math.sqrt(0.5))
    assert f(7) == pytest.approx(1 - math.sqrt(0.75))
    assert f(8) == 0.0
    with pytest.raises(ValueError, match="cooldown shape 'cos'"):
        warmup_stable_decay(0, 8, 0.5, "cos", 0.0)


def test_fork_steps_and_rounding():
    assert cooldown_steps(10, 0.2) == 2 and fork_step(10, 0.2) == 8
    assert cooldown_steps(30, 0.1) == 3 and cooldown_steps(5, 0.5) == 3  # half rounds up
    # an S-step WSD run and a longer one have the same LR up to S's fork step
    short = warmup_stable_decay(3, 50, 0.2, "sqrt", 0.1)
    long = warmup_stable_decay(3, 200, 0.2, "sqrt", 0.1)
    assert [short(i) for i in range(41)] == [long(i) for i in range(41)]
    assert short(41) < long(41)


def test_the_default_schedule_is_still_warmup_cosine():
    t = TrainSection()
    assert t.schedule == "cosine"
    cosine = warmup_cosine(t.warmup, t.steps, t.min_lr_ratio)
    assert [lr_factor(t)(i) for i in range(0, t.steps + 1, 7)] == [cosine(i) for i in range(0, t.steps + 1, 7)]
    wsd = TrainSection(schedule="wsd", steps=100, warmup=10, cooldown=0.2, cooldown_shape="linear")
    assert lr_factor(wsd)(79) == 1.0 and lr_factor(wsd)(90) == pytest.approx(0.1 + 0.9 * 0.5)


def test_branching_saves_the_stable_phase_of_every_budget_but_the_largest():
    dedicated, branched = branching_steps([100, 200, 400], cooldown=0.2)
    assert dedicated == 700 and branched == 400 + 20 + 40
    assert branching_steps([100, 200, 400, 800], 0.2) == (1500, 940)  # docs/scaling.md's ladder: 15S vs 9.4S
    assert branching_steps([50], 0.2) == (50, 50) and branching_steps([], 0.2) == (0, 0)


def test_branches_are_validated_against_the_stable_phase():
    ok = load_config(None, ["train.schedule='wsd'", "train.steps=100", "train.warmup=10", "train.branches=[20, 50]"])
    assert ok.train.fork_steps() == [16, 40]
    with pytest.raises(ConfigError, match="train.branches needs train.schedule = 'wsd'"):
        load_config(None, ["train.branches=[20]"])
    with pytest.raises(ConfigError, match=r"budget 10 forks at step 8, outside this run's stable phase \(steps 10..80"):
        load_config(None, ["train.schedule='wsd'", "train.steps=100", "train.warmup=10", "train.branches=[10]"])
    with pytest.raises(ConfigError, match="budget 120 forks at step 96"):
        load_config(None, ["train.schedule='wsd'", "train.steps=100", "train.warmup=10", "train.branches=[120]"])
    with pytest.raises(ConfigError, match=r"train.warmup \(90\) must end before the decay"):
        load_config(None, ["train.schedule='wsd'", "train.steps=100", "train.warmup=90"])
    with pytest.raises(ConfigError, match="cooldown_shape"):
        load_config(None, ["train.schedule='wsd'", "train.cooldown_shape='cos'"])
