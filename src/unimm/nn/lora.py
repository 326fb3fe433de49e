"""Low-rank adapters (LoRA, arXiv 2106.09685) on linear layers, fused projections included.

``LoRALinear`` *is* an ``nn.Linear`` (same ``weight`` / ``bias`` names, so a base checkpoint loads into it
unchanged) plus ``lora_A`` [r, in] and ``lora_B`` [out, r]: ``y = x W^T + b + s * drop(x) A^T B^T`` with
``s = alpha / r``. ``B`` starts at zero, so a fresh adapter leaves the layer's output exactly as it was. A fused
projection (``qkv_proj``, ``gate_up_proj``) gets one adapter over its whole output: the rows of q, k and v (or
gate and up) share ``A`` and have their own rows of ``B``.

Dropout on the adapter's input draws from ``LoRALinear.generator`` when one is set (the training loop seeds it
per micro-batch), so runs with dropout stay a pure function of their seed and resume exactly.
"""

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Linear):
    """A linear layer with a trainable low-rank update; built from an existing layer by ``wrap``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        bias: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.rank, self.alpha, self.dropout = rank, alpha, dropout
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(_init_a(rank, in_features, self.weight, generator))
        self.lora_B = nn.Parameter(self.weight.new_zeros(out_features, rank))
        self.generator: torch.Generator | None = None  # of the dropout masks (``seed_dropout``)

    @classmethod
    def wrap(
        cls, linear: nn.Linear, rank: int, alpha: float, dropout: float = 0.0, generator: torch.Generator | None = None
    ) -> "LoRALinear":
        """A ``LoRALinear`` sharing ``linear``'s weight and bias tensors (nothing copied), on their device; ``A``
        drawn from ``generator``."""
        with torch.device("meta"):  # the base weights are replaced below: skip their init
            layer = cls(linear.in_features, linear.out_features, rank, alpha, dropout, bias=linear.bias is not None)
        w = linear.weight
        layer.weight, layer.bias = w, linear.bias
        layer.lora_A = nn.Parameter(_init_a(rank, linear.in_features, w, generator))
        layer.lora_B = nn.Parameter(w.new_zeros(linear.out_features, rank))
        return layer

    def delta(self) -> torch.Tensor:
        """The adapter's update of the weight, ``s * B A`` [out, in]."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.dropout > 0 and self.training:
            keep = 1 - self.dropout
            if self.generator is None:
                h = F.dropout(x, self.dropout)
            else:
                g = self.generator
                mask = torch.rand(x.shape, generator=g, device=g.device).to(x.device) < keep
                h = x * mask / keep
        return F.linear(x, self.weight, self.bias) + self.scaling * F.linear(F.linear(h, self.lora_A), self.lora_B)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` whose weight is ``W + s B A`` (fp32 arithmetic, cast back to W's dtype)."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=self.weight.device)
        with torch.no_grad():
            out.weight.copy_((self.weight.float() + self.delta().float()).to(self.weight.dtype))
            if self.bias is not None:
                out.bias.copy_(self.bias)
        out.to(self.weight.dtype).requires_grad_(self.weight.requires_grad)
        return out


def _init_a(rank: int, fan_in: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``A`` as ``nn.Linear`` initialises a weight (kaiming-uniform, a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))),
    as the LoRA paper's code does."""
    bound = fan_in**-0.5
    if like.device.type == "meta":
        return like.new_empty(rank, fan_in)
    a = torch.empty(rank, fan_in, dtype=like.dtype)
    return a.uniform_(-bound, bound, generator=generator).to(like.device)


def linear_names(model: nn.Module, skip: Iterable[nn.Module] = ()) -> list[str]:
    """Dotted names of the ``nn.Linear`` modules in ``model`` outside the modules ``skip`` (and their children)."""
    skipped = {id(m) for s in skip for m in s.modules()}
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) not in skipped]


def matches(name: str, target: str) -> bool:
    """``target`` names module ``name`` itself or its last dotted components (``qkv_proj``, ``0.self_attn.o_proj``)."""
    return name == target or name.endswith("." + target)


def add_lora(
    model: nn.Module, names: list[str], rank: int, alpha: float, dropout: float = 0.0, seed: int = 0
) -> list[LoRALinear]:
    """Replace each ``nn.Linear`` named in ``names`` (full dotted names) by a ``LoRALinear`` around it, the ``A``
    matrices drawn in that order from a generator seeded with ``seed``; returns them in the order given."""
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        if isinstance(old, LoRALinear):
            raise ValueError(f"{name} already has a LoRA adapter")
        layer = LoRALinear.wrap(old, rank, alpha, dropout, generator)
        setattr(parent, child, layer)
        layers.append(layer)
    return layers


def merge_lora(model: nn.Module) -> list[str]:
    """Fold every adapter of ``model`` into its base weight, in place (``LoRALinear`` -> ``nn.Linear``); returns the
    names of the layers merged."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, getattr(parent, child).merged())
    return names


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def seed_dropout(model: nn.Module, seed: int, device: torch.device | str = "cpu") -> None:
    """Give every adapter of ``model`` one generator seeded with ``seed`` (its dropout masks' only source)."""
    layers = lora_layers(model)
    if not layers or all(m.dropout == 0 for m in layers):
        return
    g = torch.Generator(device=device).manual_seed(seed)
    for m in layers:
        m.generator = g
