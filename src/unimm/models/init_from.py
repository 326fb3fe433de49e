"""``model.init``: a fresh run's backbone from a pretrained checkpoint (docs/finetune.md).

The checkpoint is a local Hugging Face Llama / Qwen2 directory (read by ``Backbone.from_hf``) or a unimm run
directory (its ``backbone.*`` weights). Its dims must equal the run's ``[model]`` (one error lists every key
that differs); its blocks load as they are or upcycle into the run's layer kind (``nn/upcycle.py``). The
embedding and LM-head rows of the checkpoint's own token ids are kept only when the run uses the checkpoint's
tokenizer (``model.text_tokenizer = "init"``); every other row (unimm's special tokens the checkpoint lacks, image
codes, [MASK], or every row under a tokenizer trained by the run) is drawn around the pretrained rows' mean
(``nn/vocab_rows.py``). The writer, reader and codec keep their fresh init.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tokenizers import Tokenizer
from unimm.checkpoint import load_weights
from unimm.config import ModelSection, load_config
from unimm.nn.backbone import Backbone
from unimm.nn.upcycle import upcycle
from unimm.nn.vocab_rows import resize_rows
from unimm.tokenizers.text import TOKENIZER_FILE, TextTokenizer

VOCAB_KEYS = ("embed_tokens.weight", "lm_head.weight")


@dataclass
class InitSource:
    """A pretrained backbone: its weights (``Backbone`` names), dims (``model.*`` keys) and text rows."""

    path: Path
    kind: str  # "hugging face" or "unimm run"
    state: dict[str, torch.Tensor]
    dims: dict[str, Any]
    text_rows: int  # rows 0..text_rows-1 are the ids of its own tokenizer
    tokenizer_dir: Path


def dims_of(m: ModelSection) -> dict[str, Any]:
    """The ``[model]`` keys a checkpoint must agree on, resolved (``kv_heads``, ``hidden_dim``)."""
    return {
        "dim": m.dim,
        "depth": m.depth,
        "heads": m.heads,
        "kv_heads": m.kv_heads or m.heads,
        "hidden_dim": m.ffn_dim,
        "norm_eps": m.norm_eps,
        "rope_theta": m.rope_theta,
        "qkv_bias": m.qkv_bias,
    }


def read_init(path: str | Path) -> InitSource:
    """The checkpoint at ``path``; ``FileNotFoundError`` / ``ValueError`` naming ``model.init`` and the problem."""
    path = Path(path)
    where = f"model.init = {str(path)!r}"
    if not path.is_dir():
        raise FileNotFoundError(f"{where}: no such directory")
    if (path / "config.json").is_file():
        return _hugging_face(path, where)
    if (path / "config.toml").is_file() and (path / "model.safetensors").is_file():
        return _unimm_run(path)
    raise ValueError(
        f"{where} is neither a Hugging Face checkpoint (config.json + *.safetensors) nor a unimm run "
        "(config.toml + model.safetensors)"
    )


def _hugging_face(path: Path, where: str) -> InitSource:
    try:
        backbone = Backbone.from_hf(path)
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise ValueError(f"{where}: {err}") from None
    c = backbone.cfg
    dims = {
        "dim": c.dim,
        "depth": c.depth,
        "heads": c.heads,
        "kv_heads": c.kv_heads,
        "hidden_dim": c.hidden_dim,
        "norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "qkv_bias": c.qkv_bias,
    }
    state = {k: v.detach() for k, v in backbone.state_dict().items()}  # a tied head: the same tensor under both names
    rows = c.vocab_size
    if (path / TOKENIZER_FILE).is_file():
        rows = min(rows, Tokenizer.from_file(str(path / TOKENIZER_FILE)).get_vocab_size())
    return InitSource(path, "hugging face", state, dims, rows, path)


def _unimm_run(path: Path) -> InitSource:
    cfg = load_config(path / "config.toml")
    weights = load_weights(path / "model.safetensors")
    state = {k.removeprefix("backbone."): v for k, v in weights.items() if k.startswith("backbone.")}
    text_rows = TextTokenizer.load(path / "tokenizer").vocab_size
    return InitSource(path, "unimm run", state, dims_of(cfg.model), text_rows, path / "tokenizer")


def check_dims(m: ModelSection, source: InitSource) -> None:
    """``ValueError`` naming every ``model.*`` key whose value differs from the checkpoint's."""
    ours = dims_of(m)
    wrong = [k for k, v in source.dims.items() if ours[k] != v]
    if wrong:
        keys = "; ".join(f"model.{k} = {ours[k]!r} but the checkpoint has {source.dims[k]!r}" for k in wrong)
        sets = " ".join(f"--set model.{k}={_toml(source.dims[k])}" for k in wrong)
        raise ValueError(f"model.init = {str(source.path)!r} ({source.kind}) does not fit the run: {keys}; {sets}")


def _toml(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else repr(v)


def init_tokenizer(m: ModelSection) -> TextTokenizer:
    """``model.text_tokenizer = "init"``: the tokenizer of ``model.init`` (its ids unchanged, unimm's special
    tokens it lacks appended)."""
    assert m.init is not None
    path = Path(m.init)
    directory = path / "tokenizer" if (path / "config.toml").is_file() else path
    try:
        return TextTokenizer.from_checkpoint(directory)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"model.text_tokenizer = 'init': {err}") from None


@torch.no_grad()
def apply_init(model, generator: torch.Generator) -> dict[str, Any]:
    """Load ``model.cfg.model.init`` into ``model`` (a ``UnifiedModel``)'s backbone; returns what was done."""
    m = model.cfg.model
    source = read_init(m.init)
    check_dims(m, source)
    backbone = model.backbone
    state = upcycle(source.state, backbone, generator, skip=VOCAB_KEYS)
    keep = min(source.text_rows, model.text_vocab) if m.text_tokenizer == "init" else 0
    rows = backbone.embed_tokens.weight.shape[0]
    embed = source.state["embed_tokens.weight"]
    state["embed_tokens.weight"] = resize_rows(embed, rows, keep, generator)
    state["lm_head.weight"] = resize_rows(source.state.get("lm_head.weight", embed), rows, keep, generator)
    backbone.load_state_dict(state)
    model.writer.init_weights(model.ctx)  # what the writer owns of the backbone (e.g. its code rows) as fresh
    return {
        "init": str(source.path),
        "source": source.kind,
        "layers": model.cfg.layers.kind,
        "kept_rows": keep,
        "new_rows": rows - keep,
        "text_tokenizer": m.text_tokenizer,
    }
