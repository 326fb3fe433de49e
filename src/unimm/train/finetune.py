"""Fine-tuning a trained run (``train.init_from``), in full or with LoRA adapters (``[train.lora]``), and merging
a LoRA run into a plain one.

The base run fixes the model: its model and part sections (``model.max_seq_len`` excepted), ``data.image_size`` /
``data.channels`` (new data is resized and converted to them on load) and ``data.vocab_size``, its text tokenizer
and its weights, image tokenizer included (nothing is prepared again). Data, task mix, training and
sampling settings are the fine-tune's own.
"""

import json
from pathlib import Path

import tomllib

from unimm.checkpoint import atomic_write_text, load_weights
from unimm.config import PARTS, Config, ConfigError, apply_overrides, load_config, validate
from unimm.models import UnifiedModel
from unimm.models.adapters import ADAPTER_FILE, merge_adapters, save_adapter
from unimm.tokenizers.text import TextTokenizer

FIXED_SECTIONS = ("model", *PARTS)  # taken from the base run
FIXED_DATA = ("image_size", "channels", "vocab_size")
# a limit, not a weight shape (positions are rotary): longer captions of new data may raise it; a part whose
# weights do depend on it (the connector writer's caption embedding) fails to load with an error saying so
FREE_MODEL_KEY = "model.max_seq_len"


def _base_dir(cfg: Config) -> Path:
    base = Path(cfg.train.init_from)
    if not (base / "config.toml").is_file() or not (base / "tokenizer").is_dir():
        raise FileNotFoundError(
            f"train.init_from = {str(base)!r} is not a unimm run directory (config.toml, tokenizer/)"
        )
    return base


def adopt_base(cfg: Config) -> Config:
    """``cfg`` with the base run's model: its model and part sections and data geometry. A key given otherwise
    (an unset ``data.image_size`` / ``data.channels`` excepted) is an error naming each one."""
    base = load_config(_base_dir(cfg) / "config.toml")
    given, fixed = cfg.model_dump(), base.model_dump()
    differ = []
    for section in FIXED_SECTIONS:
        differ += _diff(section, given[section], fixed[section])
    differ = [d for d in differ if not d.startswith(f"{FREE_MODEL_KEY} ")]
    for key in FIXED_DATA:
        value = given["data"][key]
        if value is not None and value != fixed["data"][key]:
            differ.append(f"data.{key} ({value!r} != {fixed['data'][key]!r})")
    if differ:
        raise ValueError(
            f"train.init_from = {cfg.train.init_from!r} fixes the model, but this config differs from it in "
            f"{', '.join(differ)}; leave these keys as the base run has them (`unimm finetune RUN` starts from them)"
        )
    raw = cfg.model_dump()
    length = raw["model"]["max_seq_len"]
    for section in FIXED_SECTIONS:
        raw[section] = fixed[section]
    raw["model"]["max_seq_len"] = length
    for key in FIXED_DATA:
        raw["data"][key] = fixed["data"][key]
    return validate(raw)


def _diff(prefix: str, a, b) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(a.keys() | b.keys()) for d in _diff(f"{prefix}.{k}", a.get(k), b.get(k))]
    return [] if a == b else [f"{prefix} ({a!r} != {b!r})"]


def base_tokenizer(cfg: Config) -> TextTokenizer:
    """The base run's text tokenizer (token ids are the embedding's rows: a new tokenizer would scramble them)."""
    return TextTokenizer.load(_base_dir(cfg) / "tokenizer")


def load_base(core: UnifiedModel, cfg: Config) -> None:
    """The base run's weights into ``core`` (a base that is itself a LoRA run is merged first)."""
    base = UnifiedModel.from_pretrained(_base_dir(cfg))
    merge_adapters(base)
    try:
        core.load_state_dict(base.state_dict())
    except RuntimeError as err:  # shapes that depend on a key the fine-tune changed (model.max_seq_len)
        raise ValueError(f"the weights of {cfg.train.init_from} do not fit this config: {err}") from None
    core.freeze_fixed()


def publish_adapter(out: Path, cfg: Config, info: dict) -> Path:
    """``out/adapter.safetensors`` from the run's published weights (``model.safetensors``: EMA when on); its base
    is the run fine-tuned (``train.init_from``) or else the pretrained backbone (``model.init``)."""
    base = cfg.train.init_from or cfg.model.init
    return save_adapter(out / ADAPTER_FILE, load_weights(out / "model.safetensors"), cfg.train.lora, info, str(base))


def finetune_config(base: str | Path, config: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The config of ``unimm finetune BASE``: the base run's config with a fresh ``[train]`` (defaults) and
    ``train.init_from = BASE``, then the TOML file ``config`` (any sections, merged key by key) and ``overrides``."""
    base = Path(base)
    if not (base / "config.toml").is_file():
        raise FileNotFoundError(f"{base} is not a unimm run directory (no config.toml)")
    raw = tomllib.loads((base / "config.toml").read_text())
    raw["train"] = {}
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            _merge(raw, tomllib.loads(path.read_text()))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from None
    raw = apply_overrides(raw, overrides or [])
    raw["train"]["init_from"] = str(base)
    return validate(raw)


def _merge(raw: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(raw.get(k), dict):
            _merge(raw[k], v)
        else:
            raw[k] = v


def merge_run(run: str | Path, out: str | Path) -> Path:
    """Write ``out``: the model of LoRA run ``run`` with its adapters merged, a plain run directory
    (``config.toml`` without ``train.lora``, ``model.safetensors``, ``tokenizer/``, ``image_stats.json``) that loads
    with ``UnifiedModel.from_pretrained`` and gives the same outputs; ``merged_from.json`` names the run."""
    model = UnifiedModel.from_pretrained(run)
    if model.cfg.train.lora is None:
        raise ValueError(f"{run} has no LoRA adapters (no [train.lora] in its config.toml): nothing to merge")
    lora = model.cfg.train.lora.model_dump()
    layers = merge_adapters(model)
    out = model.save_pretrained(out)
    note = {"run": str(run), "base": model.cfg.train.init_from, "lora": lora, "layers_merged": layers}
    atomic_write_text(out / "merged_from.json", json.dumps(note, indent=2))
    return out
