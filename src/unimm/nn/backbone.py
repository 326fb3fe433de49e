"""Llama-style decoder trunk shared by every strategy, with Llama/Qwen2 weight loading.

Parameter names follow Hugging Face's Llama (``embed_tokens``, ``layers.N.self_attn.o_proj`` …),
except that q/k/v and gate/up are fused into ``qkv_proj`` and ``gate_up_proj``; ``from_hf``
concatenates a local Llama or Qwen2 safetensors checkpoint's weights into that layout.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from unimm.nn.block import DenseBlock
from unimm.nn.kv_cache import KVCache
from unimm.nn.norms import RMSNorm
from unimm.nn.rope import RotaryEmbedding


@dataclass
class BackboneConfig:
    vocab_size: int = 512
    dim: int = 256
    depth: int = 4
    heads: int = 4
    kv_heads: int = 4
    hidden_dim: int = 688
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    qkv_bias: bool = False
    tie_embeddings: bool = False


def block_factory(cfg: BackboneConfig, layer_idx: int) -> nn.Module:
    """The dense block, ``Backbone``'s default; every layer kind's factory (``nn/layers.py``) has this signature."""
    return DenseBlock(cfg.dim, cfg.heads, cfg.kv_heads, cfg.hidden_dim, layer_idx, cfg.norm_eps, cfg.qkv_bias)


def fuse_projections(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face's separate q/k/v and gate/up weights -> unimm's fused ``qkv_proj`` / ``gate_up_proj``."""
    groups = {
        "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
    }
    out = dict(state)
    for key in state:
        for fused, parts in groups.items():
            suffix = key.split(parts[0], 1)
            if len(suffix) == 2:  # e.g. "layers.3." + "self_attn.q_proj" + ".weight"
                names = [suffix[0] + p + suffix[1] for p in parts]
                out[suffix[0] + fused + suffix[1]] = torch.cat([out.pop(n) for n in names])
    return out


class Backbone(nn.Module):
    def __init__(self, cfg: BackboneConfig, make_block=block_factory) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(make_block(cfg, i) for i in range(cfg.depth))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = RotaryEmbedding(cfg.dim // cfg.heads, cfg.rope_theta)
        # recompute each block in backward instead of storing its activations (training without a cache only)
        self.activation_checkpointing = False
        self._compiled: list[nn.Module] | None = None  # torch.compile'd blocks for training forwards (a plain list:
        # no second copy of the weights in the state dict)

    def compile_blocks(self, backend: str | None = "inductor") -> None:
        """Use ``torch.compile``'d blocks for training forwards without a cache (the fused elementwise work, RoPE,
        norms and activations, is where an eager step loses its time); decoding and evaluation stay eager.
        ``backend=None`` switches back to the eager blocks."""
        self._compiled = None if backend is None else [torch.compile(layer, backend=backend) for layer in self.layers]

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        modality: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x: [B, L, dim] input embeddings; positions: [B, 3, L] -> (normed hidden [B, L, dim], aux losses)."""
        rope = self.rotary(positions)
        aux: dict[str, torch.Tensor] = {}
        recompute = self.activation_checkpointing and cache is None and self.training and torch.is_grad_enabled()
        compiled = self._compiled is not None and cache is None and self.training
        for i, layer in enumerate(self.layers):
            if compiled:
                layer = self._compiled[i]
            if recompute:
                x, layer_aux = checkpoint(layer, x, modality, attn_mask, rope, None, use_reentrant=False)
            else:
                x, layer_aux = layer(x, modality, attn_mask, rope, cache)
            for k, v in layer_aux.items():
                aux[k] = aux.get(k, 0.0) + v
        if cache is not None:
            cache.advance(x.shape[1])
        return self.norm(x), aux

    def new_cache(self, max_len: int) -> KVCache:
        return KVCache(len(self.layers), max_len)

    def lm_logits(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Plain causal LM over token ids [B, L] (the Llama forward) -> logits [B, L, vocab]."""
        start = cache.length if cache is not None else 0
        pos = torch.arange(start, start + ids.shape[1], device=ids.device).expand(ids.shape[0], 3, -1)
        hidden, _ = self(self.embed_tokens(ids), pos, cache=cache)
        return self.lm_head(hidden)

    @classmethod
    def from_hf(cls, path: str | Path) -> "Backbone":
        """Load a local Hugging Face Llama or Qwen2 checkpoint (config.json + *.safetensors)."""
        path = Path(path)
        hf = json.loads((path / "config.json").read_text())
        if hf.get("model_type") not in ("llama", "qwen2"):
            raise ValueError(f"{path}: model_type {hf.get('model_type')!r} is not 'llama' or 'qwen2'")
        heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
        if head_dim * heads != hf["hidden_size"]:
            raise ValueError(f"{path}: head_dim * heads != hidden_size is not supported")
        rope = hf.get("rope_parameters") or {}  # transformers >= 5 nests rope settings here
        rope_type = rope.get("rope_type") or (hf.get("rope_scaling") or {}).get("rope_type", "default")
        if rope_type != "default" or (hf.get("rope_scaling") and "rope_type" not in hf["rope_scaling"]):
            raise ValueError(f"{path}: rope scaling {rope or hf.get('rope_scaling')} is not supported")
        cfg = BackboneConfig(
            vocab_size=hf["vocab_size"],
            dim=hf["hidden_size"],
            depth=hf["num_hidden_layers"],
            heads=heads,
            kv_heads=hf.get("num_key_value_heads", heads),
            hidden_dim=hf["intermediate_size"],
            norm_eps=hf["rms_norm_eps"],
            rope_theta=hf.get("rope_theta") or rope.get("rope_theta", 10000.0),
            qkv_bias=hf["model_type"] == "qwen2" or bool(hf.get("attention_bias", False)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        )
        model = cls(cfg)
        state: dict[str, torch.Tensor] = {}
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{path}: no *.safetensors files")
        for f in files:
            state.update(load_file(f))
        state = fuse_projections({k.removeprefix("model."): v for k, v in state.items()})
        if cfg.tie_embeddings:
            state.pop("lm_head.weight", None)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not (cfg.tie_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise ValueError(f"{path}: missing weights {missing[:5]}, unexpected {unexpected[:5]}")
        return model
