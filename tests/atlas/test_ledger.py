"""The atlas's ledger: the two regimes (scratch: preparation inside the budget; pretrained: an equal side budget per
part), the shared tokenizer charged or separate, one clear error when preparation alone spends the budget, and a
run's reported total equal to its counted parts."""

import json
import math
import re
from pathlib import Path

import pytest

from conftest import tiny_overrides
from unimm.atlas import load_atlas, plan_runs
from unimm.atlas.budget import BudgetError, StepCost, encoder_inputs, steps_for_budget
from unimm.atlas.ledger import RunLedger
from unimm.atlas.side import preparation_prices
from unimm.atlas.worker import train_run
from unimm.config import ConfigError, load_config

CONFIGS = Path(__file__).parents[2] / "configs"
TINY = {"sample.max_new_tokens": 16, "train.ema": 0, "train.flops_every": 1}


def _atlas(tmp_path: Path, digits_dir: Path, budget: str, strategy_set: list[str]):
    common = [o for o in tiny_overrides(digits_dir, **TINY) if not o.startswith(("data.path", "train.steps"))]
    common = [o for o in common if not o.startswith("codec.")]
    text = f"""
name = "ledger"
data = "{digits_dir}"
set = {json.dumps(common)}
[budget]
{budget}
[[strategies]]
name = "transfusion"
preset = "{CONFIGS / "quick.toml"}"
set = {json.dumps(["codec.hidden=8", "codec.downsample=2", *strategy_set])}
"""
    path = tmp_path / "atlas.toml"
    path.write_text(text)
    return load_atlas(path)


def _start(tmp_path: Path, run) -> Path:
    folder = tmp_path / "runs" / run.name
    folder.mkdir(parents=True)
    launch = {"threads": 1, "device": "cpu", "measure_steps": 2, "checkpoints": 2, "eval": {}}
    (folder / "atlas_run.json").write_text(json.dumps({"spec": run.spec(), "digest": run.digest(), "launch": launch}))
    return folder


def test_scratch_training_spends_what_preparation_left(digits_dir, tmp_path):
    atlas = _atlas(tmp_path, digits_dir, "flops = 1e9", ["codec.steps=5"])
    (run,) = plan_runs(atlas)
    folder = _start(tmp_path, run)
    train_run(folder)
    plan = json.loads((folder / "budget.json").read_text())
    ledger = json.loads((folder / "ledger.json").read_text())
    assert plan["regime"] == "scratch" and plan["charged"] == ledger["preparation"]  # every preparation item
    assert set(ledger["preparation"]) == {"codec.steps", "codec.scale_pass"}
    assert plan["left"] == 1e9 - sum(ledger["preparation"].values()) > 0
    cost, steps = plan["step_cost"], plan["steps"]
    # the fewest steps whose counted FLOPs and once-charged encoder reach what is left
    encoder = encoder_inputs(load_config(CONFIGS / "quick.toml", list(run.overrides)))
    per_input = cost["encoder_flops_per_input"]
    assert steps * cost["flops"] + per_input * encoder.advance(steps).distinct >= plan["left"] * (1 - 1e-9)
    encoder = encoder_inputs(load_config(CONFIGS / "quick.toml", list(run.overrides)))
    assert (steps - 1) * cost["flops"] + per_input * encoder.advance(steps - 1).distinct < plan["left"]
    result = RunLedger.read(ledger, {"regime": "scratch", "shared_tokenizer": "charged"})
    # lands on the budget up to the spread of batch lengths (batches of 8, priced on the mean of 2 measured steps)
    assert result.total == ledger["total"] and abs(result.budgeted / 1e9 - 1) < 0.2


def test_scratch_refuses_a_run_whose_preparation_alone_spends_the_budget(digits_dir, tmp_path):
    atlas = _atlas(tmp_path, digits_dir, "flops = 5e7", ["codec.steps=5"])
    (run,) = plan_runs(atlas)
    with pytest.raises(BudgetError) as err:
        train_run(_start(tmp_path, run))
    message = str(err.value)
    assert message.startswith(f"run {run.name}: its preparation alone costs ") and len(message.splitlines()) == 1
    assert re.search(
        r"\(codec\.steps [\d.e+]+, codec\.scale_pass [\d.e+]+\), the whole flops budget of 5e\+07", message
    )


def test_pretrained_gives_every_part_the_side_budget_and_training_the_main_one(digits_dir, tmp_path):
    side = 4e8
    atlas = _atlas(tmp_path, digits_dir, f'flops = 6e8\nregime = "pretrained"\nside_flops = {side}', [])
    (run,) = plan_runs(atlas)
    price = preparation_prices(load_config(CONFIGS / "quick.toml", list(run.overrides)))
    folder = _start(tmp_path, run)
    train_run(folder)
    plan = json.loads((folder / "budget.json").read_text())
    ledger = json.loads((folder / "ledger.json").read_text())
    steps = math.ceil(side / price["codec.steps"])
    assert plan["side"]["steps"] == {"codec.steps": steps} and plan["charged"] == {} and plan["left"] == 6e8
    assert ledger["preparation"]["codec.steps"] == steps * price["codec.steps"]  # the priced step, steps times
    assert load_config(folder / "config.toml").codec.steps == steps
    result = RunLedger.read(ledger, {"regime": "pretrained", "shared_tokenizer": "charged"})
    assert result.side == sum(ledger["preparation"].values()) and result.budgeted == result.total - result.side
    assert abs(result.budgeted / 6e8 - 1) < 0.2


def test_a_runs_total_is_the_sum_of_its_counted_parts_charged_or_separate():
    ledger = {
        "preparation": {"codec.steps": 10.0, "reader.pretrain_steps": 5.0},
        "shared": {"codec.tokenizer": {"flops": 100.0, "path": "tok"}},
        "frozen_encoders": {"flops": 3.0, "flops_per_input": 1.0, "distinct_inputs": 3, "inputs": 4},
        "training_steps": {"steps": 2, "flops": 40.0},
    }
    charged = RunLedger.read(ledger, {"regime": "scratch", "shared_tokenizer": "charged"})
    assert charged.total == sum(charged.parts().values()) == 10 + 5 + 100 + 3 + 40 == charged.budgeted
    separate = RunLedger.read(ledger, {"regime": "scratch", "shared_tokenizer": "separate"})
    assert separate.total == sum(separate.parts().values()) == 58 and "shared: codec.tokenizer" not in separate.parts()
    pretrained = RunLedger.read(ledger, {"regime": "pretrained", "shared_tokenizer": "charged"})
    assert (pretrained.side, pretrained.budgeted, pretrained.total) == (115, 43, 158)


def test_the_encoder_once_charge_buys_fewer_steps_only_until_inputs_repeat(digits_dir):
    cfg = load_config(CONFIGS / "quick.toml", tiny_overrides(digits_dir, **{"codec.patch_size": 1, "data.shift": 0}))
    cost = StepCost(flops=1000.0, tokens=1, seconds=None, measured_steps=1, encoder_flops_per_input=100.0)
    encoder = encoder_inputs(cfg)  # 200 images, 8 a step, no shift: every input new for 25 steps
    # 25 steps: 25 000 + 200 x 100 = 45 000; after that each step adds 1000 only
    assert steps_for_budget("flops", 45_000, cost, encoder_inputs(cfg)) == 25
    assert steps_for_budget("flops", 50_000, cost, encoder) == 30 and encoder.distinct == 200
    assert steps_for_budget("flops", 50_000, cost) == 50  # without the once-charge


@pytest.mark.parametrize(
    "budget, message",
    [
        ('flops = 1e9\nregime = "pretrained"', "side_flops is the pretrained regime's side budget"),
        ("flops = 1e9\nside_flops = 1e9", "side_flops is the pretrained regime's side budget"),
        ('flops = 1e9\nshared_tokenizer = "free"', "'budget.shared_tokenizer': 'free'"),
        ('flops = 1e9\nregime = "pretrained"\nside_flops = 1e9\n[tokenizer]\nsteps = 10',
         "[tokenizer] steps: the pretrained regime sets them from [budget] side_flops"),
    ],
)  # fmt: skip
def test_bad_ledger_settings_are_one_line_errors(digits_dir, tmp_path, budget, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        _atlas(tmp_path, digits_dir, budget, [])
    assert len(str(err.value).splitlines()) == 1


def test_what_each_regime_charges_to_the_budget(tmp_path):
    from unimm.atlas.charges import preparation_charge, shared_charge

    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "ledger.json").write_text(json.dumps({"total": 7e9, "wall_s": 12.5}))
    prep = {"vq_psnr": 17.0, "flops.codec.steps": 3e9, "flops.reader.pretrain_steps": 1e9, "prep_wall_s": 4.0}

    def spec(regime: str, shared: str) -> dict:
        return {"ledger": {"regime": regime, "side_flops": 1.0 if regime == "pretrained" else None,
                           "shared_tokenizer": shared}}  # fmt: skip

    assert shared_charge(spec("scratch", "charged"), str(tok), "flops") == {"codec.tokenizer": 7e9}
    assert shared_charge(spec("scratch", "charged"), str(tok), "wall_s") == {"codec.tokenizer": 12.5}
    assert shared_charge(spec("scratch", "separate"), str(tok), "flops") == {}
    assert shared_charge(spec("pretrained", "charged"), str(tok), "flops") == {}  # on the side line instead
    assert preparation_charge(spec("scratch", "charged"), prep, "flops") == {
        "codec.steps": 3e9,
        "reader.pretrain_steps": 1e9,
    }
    assert preparation_charge(spec("scratch", "charged"), prep, "wall_s") == {"preparation wall s": 4.0}
    assert preparation_charge(spec("pretrained", "charged"), prep, "flops") == {}
    assert preparation_charge({}, prep, "flops") == {"codec.steps": 3e9, "reader.pretrain_steps": 1e9}  # old spec
    (tok / "ledger.json").unlink()
    with pytest.raises(ValueError, match="has no ledger.json: its FLOPs are unknown"):
        shared_charge(spec("scratch", "charged"), str(tok), "flops")


def test_the_shared_tokenizer_spends_the_side_budget_in_the_pretrained_regime(digits_dir, tmp_path):
    from unimm.atlas.prepare import _config, tokenizer_steps
    from unimm.atlas.side import tokenizer_step_price

    vq = '["tokenizer.hidden=8", "tokenizer.code_dim=8", "tokenizer.codebook_size=16", "tokenizer.downsample=2"]'
    path = str(digits_dir)
    assert (
        tokenizer_steps(_atlas(tmp_path, digits_dir, "flops = 1e9\n[tokenizer]\nsteps = 12", []), path, None, None)
        == 12
    )
    assert tokenizer_steps(_atlas(tmp_path, digits_dir, "flops = 1e9\n[tokenizer]", []), path, None, None) == 1000
    side = f'flops = 1e9\nregime = "pretrained"\nside_flops = 3e8\n[tokenizer]\nset = {vq}'
    pretrained = _atlas(tmp_path, digits_dir, side, [])
    price = tokenizer_step_price(_config(pretrained, path, None, None, 1))
    assert tokenizer_steps(pretrained, path, None, None) == math.ceil(3e8 / price) > 1


def test_a_strategy_in_the_scratch_regime_beside_pretrained_ones_pays_for_the_same_parts(digits_dir, tmp_path):
    side = 4e8
    atlas = _atlas(tmp_path, digits_dir, f'flops = 1e9\nregime = "pretrained"\nside_flops = {side}', [])
    twin = atlas.strategies[0].model_copy(update={"name": "transfusion-scratch", "regime": "scratch"})
    atlas = atlas.model_copy(update={"strategies": [atlas.strategies[0], twin]})
    assert atlas.regimes == {"pretrained", "scratch"}
    pretrained, scratch = plan_runs(atlas)
    assert (pretrained.regime, scratch.regime) == ("pretrained", "scratch") and scratch.side_flops == side
    plans = []
    for run in (pretrained, scratch):
        folder = _start(tmp_path, run)
        train_run(folder)
        plans.append(json.loads((folder / "budget.json").read_text()))
    p, s = plans
    assert s["side"]["steps"] == p["side"]["steps"]  # the same parts, prepared with the side budget's steps
    assert p["charged"] == {} and p["left"] == 1e9
    assert set(s["charged"]) == {"codec.steps", "codec.scale_pass"} and s["left"] == 1e9 - sum(s["charged"].values())
    assert s["steps"] < p["steps"]  # the scratch twin pays its preparation from its budget


def test_a_strategy_regime_needs_the_side_budget_and_pairs_stay_within_a_regime(digits_dir, tmp_path):
    from unimm.atlas.config import AtlasConfig

    atlas = _atlas(tmp_path, digits_dir, "flops = 1e9", [])
    raw = atlas.model_dump()
    raw["strategies"][0]["regime"] = "pretrained"
    with pytest.raises(ValueError, match="side_flops is the pretrained regime's side budget"):
        AtlasConfig.model_validate(raw)
    raw["budget"]["side_flops"] = 1e8
    assert AtlasConfig.model_validate(raw).regimes == {"pretrained"}

    from unimm.atlas.findings import matched_pairs
    from unimm.atlas.results import RunResult, group_cells

    raw["strategies"].append({**raw["strategies"][0], "name": "janus", "set": [*raw["strategies"][0]["set"],
                              'reader={kind = "vit", patch = 2, dim = 16, depth = 1, heads = 2}']})  # fmt: skip
    both = AtlasConfig.model_validate(raw)
    runs = plan_runs(both)
    cells = group_cells([RunResult(r, tmp_path, "done", {"caption_accuracy": 0.5}) for r in runs])
    assert len(matched_pairs("reader.kind", {"shared"}, {"vit"}, cells)) == 1
    raw["strategies"][1]["regime"] = "scratch"
    runs = plan_runs(AtlasConfig.model_validate(raw))
    cells = group_cells([RunResult(r, tmp_path, "done", {"caption_accuracy": 0.5}) for r in runs])
    assert matched_pairs("reader.kind", {"shared"}, {"vit"}, cells) == []  # pretrained vs scratch: never a pair
