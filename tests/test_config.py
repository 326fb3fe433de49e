"""Config loading: presets validate, overrides apply, bad keys and values give one clear line; each part's
section holds only its kind's fields; old-style configs upgrade to the committed presets."""

from pathlib import Path

import pytest
import tomllib

from unimm.config import ConfigError, dump_toml, load_config, validate, with_sampling
from unimm.config_upgrade import upgrade

ROOT = Path(__file__).parents[1]
CONFIGS = sorted(ROOT.joinpath("configs").glob("*.toml"))
# each preset as it was before the config-by-part redesign ([image] / [objective] sections), verbatim
OLD_PRESETS = Path(__file__).parent / "data_old_presets"


def _error(overrides: list[str] | None = None, raw: dict | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        validate(raw) if raw is not None else load_config(None, overrides)
    return str(e.value)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_presets_validate_and_round_trip(path, tmp_path):
    cfg = load_config(path)
    (tmp_path / "c.toml").write_text(dump_toml(cfg))
    assert load_config(tmp_path / "c.toml") == cfg


def test_overrides_parse_types():
    cfg = load_config(None, ["model.depth=8", "denoiser.kind=ddpm", "train.tensorboard=false", "name=x y"])
    assert cfg.model.depth == 8 and cfg.denoiser.kind == "ddpm" and cfg.train.tensorboard is False
    assert cfg.name == "x y"
    assert cfg.sample.sampler == "ddim"  # the default sampler follows the denoiser


def test_whole_section_override_changes_kind():
    cfg = load_config(None, ['layers={kind = "moe", experts = 4}'])
    assert cfg.layers.kind == "moe" and cfg.layers.experts == 4 and cfg.layers.top_k == 2


def test_data_class_names_are_a_list_of_distinct_names(tmp_path):
    cfg = load_config(None, ['data.class_names=[" cat", "dog"]'])
    assert cfg.data.class_names == ["cat", "dog"]
    (tmp_path / "c.toml").write_text(dump_toml(cfg))
    assert load_config(tmp_path / "c.toml").data.class_names == ["cat", "dog"]
    assert load_config(None).data.class_names is None and "class_names" not in dump_toml(load_config(None))
    for bad, says in [
        ('["cat", "Cat"]', "distinct"),
        ("[]", "at least 1"),
        ('["cat", " "]', "empty"),
        ('"cat"', "list"),
    ]:
        msg = _error([f"data.class_names={bad}"])
        assert "data.class_names" in msg and says in msg and len(msg.splitlines()) == 1, msg


def test_sampling_overrides_change_only_sample_and_bad_ones_change_nothing():
    cfg = load_config(ROOT / "configs" / "chameleon.toml")
    before = cfg.model_dump()
    assert with_sampling(cfg, ["image_temperature=0", "sample.cfg=1.5"]) is cfg
    assert cfg.sample.image_temperature == 0 and cfg.sample.cfg == 1.5 and cfg.sample.sampler == "ar"
    assert {k: v for k, v in cfg.model_dump().items() if k != "sample"} == {
        k: v for k, v in before.items() if k != "sample"
    }
    for bad, named in [("bogus=1", "sample.bogus"), ("steps=0", "sample.steps"), ("model.dim=3", "sample.model")]:
        with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
            with_sampling(cfg, [bad])
    assert cfg.sample.image_temperature == 0 and cfg.sample.steps == before["sample"]["steps"]


def test_unknown_key_names_key_and_allowed():
    msg = _error(["model.dimm=3"])
    assert "model.dimm" in msg and "dim, depth" in msg
    assert len(msg.splitlines()) == 1


def test_bad_literal_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"writer\.order.*'spiral'.*'raster' or 'random'"):
        load_config(None, ['writer={kind = "mar", order = "spiral"}'])
    with pytest.raises(ConfigError, match=r"sample\.sampler.*'gan'.*'ddim'"):
        load_config(None, ["sample.sampler=gan"])


def test_bad_number_and_cross_field_checks():
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, ["train.lr=-1"])
    with pytest.raises(ConfigError, match="divisible"):
        load_config(None, ["model.dim=30"])
    with pytest.raises(ConfigError, match="does not pair"):
        validate({"denoiser": {"kind": "ddpm"}, "sample": {"sampler": "flow_euler"}})


def test_odd_head_size_is_one_line_naming_the_keys():
    """RoPE rotates pairs of a head's channels: an odd head size would pass and then crash in nn/rope.py."""
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.dim=68", "model.heads=4"])
    assert "\n" not in str(e.value) and "model.dim / model.heads = 68 / 4 = 17" in str(e.value)
    with pytest.raises(ConfigError, match=r"reader.dim / reader.heads = 34 / 2 = 17"):
        load_config(None, ['reader={kind = "vit", dim = 34, heads = 2}'])
    with pytest.raises(ConfigError, match=r"reader.dim \(30\) must be divisible by reader.heads \(4\)"):
        load_config(None, ['reader={kind = "vit", dim = 30, heads = 4}'])
    assert load_config(None, ["model.dim=60", "model.heads=6"]).model.dim == 60  # head size 10: fine


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


# ----------------------------------------------------------------------------- parts


def test_field_of_another_kind_is_one_line_naming_key_and_kind():
    msg = _error(["writer.head_dim=3"])  # a mar field on the default latent writer
    assert msg.startswith("unknown config key 'writer.head_dim' for writer kind 'latent'")
    assert len(msg.splitlines()) == 1
    msg = _error(["reader.kind=vit", "reader.connector.queries=4"])  # a resampler field on the mlp connector
    assert "unknown config key 'reader.connector.queries' for connector kind 'mlp'" in msg
    assert len(msg.splitlines()) == 1


def test_unknown_kind_lists_allowed_kinds():
    msg = _error(["writer.kind=gan"])
    assert "writer.kind" in msg and "gan" in msg
    for kind in ("ar-codes", "connector", "latent", "mar", "masked-codes"):
        assert kind in msg
    assert len(msg.splitlines()) == 1


def test_writer_needing_another_codec_says_so():
    msg = _error(["writer.kind=ar-codes", "codec.kind=pixels"])
    assert "writer kind 'ar-codes' needs codec.kind in ('vq',)" in msg and "'pixels'" in msg
    assert load_config(None, ["writer.kind=ar-codes", "codec.kind=vq"]).codec.kind == "vq"


def test_writer_that_does_not_denoise_rejects_denoiser_section():
    msg = _error(raw={"writer": {"kind": "ar-codes"}, "codec": {"kind": "vq"}, "denoiser": {"kind": "ddpm"}})
    assert "writer kind 'ar-codes' does not denoise: remove the [denoiser] section" in msg
    cfg = validate({"writer": {"kind": "ar-codes"}, "codec": {"kind": "vq"}})
    assert cfg.denoiser is None
    assert load_config(None).denoiser.kind == "flow"  # a writer that denoises gets the default denoiser


@pytest.mark.parametrize(
    ("raw", "sampler"),
    [
        ({}, "flow_euler"),
        ({"denoiser": {"kind": "ddpm"}}, "ddim"),
        ({"writer": {"kind": "mar"}, "denoiser": {"kind": "ddpm"}}, "ddim"),
        ({"writer": {"kind": "ar-codes"}, "codec": {"kind": "vq"}}, "ar"),
        ({"writer": {"kind": "masked-codes"}, "codec": {"kind": "vq"}}, "maskgit"),
    ],
)
def test_default_sampler_follows_writer_and_denoiser(raw, sampler):
    assert validate(raw).sample.sampler == sampler


def test_mismatched_sampler_names_the_allowed_ones():
    msg = _error(raw={"denoiser": {"kind": "ddpm"}, "sample": {"sampler": "flow_euler"}})
    assert "writer kind 'latent' and denoiser kind 'ddpm'" in msg and "('ddim', 'ddpm')" in msg
    msg = _error(raw={"writer": {"kind": "masked-codes"}, "codec": {"kind": "vq"}, "sample": {"sampler": "ar"}})
    assert "'ar'" in msg and "writer kind 'masked-codes'" in msg and "('maskgit',)" in msg


@pytest.mark.parametrize("section", ["image", "objective"])
def test_old_style_config_names_the_upgrade_command(section):
    msg = _error(raw={section: {}})
    assert "old-style config" in msg and "unimm config upgrade" in msg


# what a preset changed after the redesign that no old-style key can express: (section, key) -> today's value;
# the upgraded old file keeps the old meaning (bagel routed its MoT layers by modality before layers.route)
CHANGED_SINCE = {
    "bagel": {("layers", "route"): "role"},
    "quick": {("data", "shift"): 2},
    "unidisc": {("text", "joint"): True, ("text", "joint_fraction"): 0.5},
}


@pytest.mark.parametrize("old", sorted(OLD_PRESETS.glob("*.toml")), ids=lambda p: p.stem)
def test_upgrade_of_each_old_preset_gives_the_committed_preset(old):
    raw = tomllib.loads(old.read_text())
    assert "image" in raw and "objective" in raw  # the fixture is the old form
    upgraded = validate(upgrade(raw)).model_dump()
    for (section, key), value in CHANGED_SINCE.get(old.stem, {}).items():
        assert upgraded[section][key] != value
        upgraded[section][key] = value
    assert upgraded == load_config(ROOT / "configs" / old.name).model_dump()


def test_old_presets_are_the_eleven_presets_of_before_the_redesign():
    names = sorted(p.stem for p in OLD_PRESETS.glob("*.toml"))
    assert len(names) == 11 and set(names) <= {p.stem for p in CONFIGS}


def test_dump_round_trips_nested_connector_section(tmp_path):
    overrides = [
        'reader={kind = "vit", dim = 32, connector = {kind = "qformer", queries = 4, depth = 1}}',
        "model.dim=64",
    ]
    cfg = load_config(None, overrides)
    text = dump_toml(cfg)
    assert "[reader.connector]" in text and 'kind = "qformer"' in text
    (tmp_path / "c.toml").write_text(text)
    again = load_config(tmp_path / "c.toml")
    assert again == cfg and again.reader.connector.kind == "qformer" and again.reader.connector.queries == 4


def test_setting_a_kind_starts_that_section_afresh(tmp_path):
    """``--set X.kind=Y`` drops the old kind's fields (they mean nothing to Y), whether the file named the old kind
    or left it to the default; later overrides of the section apply on top, and the same kind keeps its fields."""
    moe = load_config(ROOT / "configs" / "ar-moe.toml", ["layers.kind=dense"])
    assert moe.layers.model_dump() == {"kind": "dense"}
    implicit = tmp_path / "c.toml"
    implicit.write_text("[writer]\nread_noise = 0.2\n")  # kind left to the default: latent
    cfg = load_config(implicit, ["writer.kind=mar", "writer.head_depth=2", "denoiser.kind=ddpm"])
    assert cfg.writer.kind == "mar" and cfg.writer.head_depth == 2
    assert load_config(implicit, ["writer.kind=latent"]).writer.read_noise == 0.2


@pytest.mark.parametrize("path", sorted(ROOT.joinpath("configs", "tok").glob("*.toml")), ids=lambda p: p.stem)
def test_tokenizer_presets_validate(path):
    from unimm.config import TokenizerConfig

    assert load_config(path, schema=TokenizerConfig).tokenizer.kind in ("vq", "vae")


@pytest.mark.parametrize("path", sorted(ROOT.joinpath("configs", "recipes").glob("*.toml")), ids=lambda p: p.stem)
def test_recipes_validate(path):
    assert load_config(path).name
