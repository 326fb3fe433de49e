"""LoRA adapters on a UnifiedModel (``[train.lora]``): which layers get one, what trains, the adapter file, merging.

An adapter file (``adapter.safetensors``) holds the adapters' ``lora_A`` / ``lora_B`` tensors and the modules
trained in full beside them (``train.lora.train``), under the model's own parameter names, and in its metadata
the ``[train.lora]`` settings, the layers adapted and the base run. ``apply_adapter`` puts it onto a model of the
base's config; ``merge_adapters`` folds every adapter into its base weight (``W + alpha / rank * B A``), leaving a
plain model.
"""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from unimm.checkpoint import atomic_write
from unimm.config import LoRASection
from unimm.nn.lora import LoRALinear, add_lora, linear_names, matches, merge_lora

ADAPTER_FILE = "adapter.safetensors"
FORMAT = "unimm-lora"


def _fixed(model) -> list[nn.Module]:
    return list(model.writer.fixed_modules())


def resolve_targets(model, lora: LoRASection) -> tuple[list[str], list[str]]:
    """(the linear layers ``lora.targets`` names, the modules ``lora.train`` names), full dotted names, outside the
    frozen parts (the image tokenizer). ``ValueError`` naming every target that matches nothing, with the names
    that would."""
    fixed = _fixed(model)
    linears = linear_names(model, skip=fixed)
    skipped = {id(m) for f in fixed for m in f.modules()}
    modules = [n for n, m in model.named_modules() if n and id(m) not in skipped]
    layers = [n for n in linears if any(matches(n, t) for t in lora.targets)]
    trained = [n for n in modules if any(matches(n, t) for t in lora.train)]
    trained = [n for n in trained if not any(n.startswith(p + ".") for p in trained)]  # a module once, not its children
    problems = []
    missing = [t for t in lora.targets if not any(matches(n, t) for n in linears)]
    if missing:
        short = sorted({n.rsplit(".", 1)[-1] for n in linears})
        problems.append(
            f"train.lora.targets: no linear layer of this model is named {', '.join(map(repr, missing))}; "
            f"its linear layers end in {', '.join(short)} (or give a longer dotted name, "
            f"e.g. {linears[0] if linears else 'backbone.layers.0.self_attn.o_proj'})"
        )
    missing = [t for t in lora.train if not any(matches(n, t) for n in modules)]
    if missing:
        problems.append(
            f"train.lora.train: no module of this model is named {', '.join(map(repr, missing))} "
            "(give a dotted name such as backbone.embed_tokens or backbone.lm_head; the image tokenizer stays frozen)"
        )
    overlap = [n for n in layers if any(n == t or n.startswith(t + ".") for t in trained)]
    if overlap:
        problems.append(f"train.lora: {', '.join(overlap)} both get an adapter and train in full; choose one")
    if problems:
        raise ValueError("\n".join(problems))
    return layers, trained


def add_adapters(model, lora: LoRASection, seed: int = 0, layers: list[str] | None = None) -> dict:
    """Give ``model`` the adapters of ``lora`` (on ``layers`` when given, else on what ``lora.targets`` names) and
    freeze everything else except ``lora.train``. Returns {"layers", "trained", "trainable", "total"}."""
    found, trained = resolve_targets(model, lora)
    layers = found if layers is None else layers
    add_lora(model, layers, lora.rank, lora.alpha, lora.dropout, seed)
    model.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.lora_A.requires_grad_(True)
            m.lora_B.requires_grad_(True)
    for name in trained:
        model.get_submodule(name).requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"layers": layers, "trained": trained, "trainable": trainable, "total": total}


def adapter_keys(state: dict[str, torch.Tensor], trained: list[str]) -> list[str]:
    """The keys of ``state`` an adapter file keeps: every ``lora_A`` / ``lora_B`` and the tensors of ``trained``."""
    return [k for k in state if k.endswith((".lora_A", ".lora_B")) or any(k.startswith(t + ".") for t in trained)]


def save_adapter(path: str | Path, state: dict[str, torch.Tensor], lora: LoRASection, info: dict, base: str) -> Path:
    """Write the adapter tensors of ``state`` (a full state dict of the adapted model) and their settings."""
    keys = adapter_keys(state, info["trained"])
    tensors = {k: state[k].detach().contiguous().cpu() for k in keys}
    meta = {
        "format": FORMAT,
        "lora": json.dumps(lora.model_dump()),
        "layers": json.dumps(info["layers"]),
        "trained": json.dumps(info["trained"]),
        "base": base,
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return Path(path)


def read_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, {"lora": LoRASection, "layers", "trained", "base"}) of an adapter file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter file not found: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is corrupt or truncated ({err}); nothing was loaded") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a unimm LoRA adapter file (no {FORMAT!r} metadata)")
    info = {
        "lora": LoRASection.model_validate(json.loads(meta["lora"])),
        "layers": json.loads(meta["layers"]),
        "trained": json.loads(meta["trained"]),
        "base": meta.get("base", ""),
    }
    return tensors, info


def apply_adapter(model, path: str | Path) -> dict:
    """Put the adapter file at ``path`` onto ``model`` (a model of the base's config, adapters not yet added):
    the same layers adapted, its tensors loaded. Returns the file's info."""
    tensors, info = read_adapter(path)
    add_adapters(model, info["lora"], layers=info["layers"])
    own = adapter_keys(model.state_dict(), info["trained"])
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(tensors, strict=False)
    return info


def merge_adapters(model) -> list[str]:
    """Fold every adapter into its base weight, in place; the model's config then has no ``train.lora``. Returns
    the layers merged."""
    merged = merge_lora(model)
    model.cfg.train.lora = None
    return merged
