"""Config loading: presets validate, overrides apply, bad keys and values give one clear line."""

from pathlib import Path

import pytest

from unimm.config import ConfigError, dump_toml, load_config, validate

CONFIGS = sorted(Path(__file__).parents[1].joinpath("configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_presets_validate_and_round_trip(path, tmp_path):
    cfg = load_config(path)
    (tmp_path / "c.toml").write_text(dump_toml(cfg))
    assert load_config(tmp_path / "c.toml") == cfg


def test_overrides_parse_types():
    cfg = load_config(None, ["model.depth=8", "objective.image=diffusion", "train.tensorboard=false", "name=x y"])
    assert cfg.model.depth == 8 and cfg.objective.image == "diffusion" and cfg.train.tensorboard is False
    assert cfg.name == "x y"
    assert cfg.sample.sampler == "ddim"  # the default sampler follows the objective


def test_unknown_key_names_key_and_allowed():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.dimm=3"])
    assert "model.dimm" in str(e.value) and "dim, depth" in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_bad_literal_lists_allowed_values():
    allowed = "'diffusion', 'flow', 'ar', 'masked', 'mar' or 'connector'"
    with pytest.raises(ConfigError, match=rf"objective.image.*'gan'.*{allowed}"):
        load_config(None, ["objective.image=gan"])


def test_bad_number_and_cross_field_checks():
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, ["train.lr=-1"])
    with pytest.raises(ConfigError, match="divisible"):
        load_config(None, ["model.dim=30"])
    with pytest.raises(ConfigError, match="does not pair"):
        validate({"objective": {"image": "diffusion"}, "sample": {"sampler": "flow_euler"}})


def test_unknown_section_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'modle'"):
        validate({"modle": {}})
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["model.depth"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
