"""Sparse upcycling: a dense backbone's weights as the start of a backbone of another layer kind.

Komatsuzaki et al. 2023 ("Sparse Upcycling"): every expert of a routed MoE feed-forward starts as a copy of the
dense SwiGLU and the router as small noise; Mixture-of-Transformers (Liang et al. 2024, BAGEL) starts every
branch as a copy of the dense block. Both then compute the dense layer's function at step 0:

- MoE with ``top_k >= 2`` renormalises the k gates to sum to 1 (``nn/moe.py``), so identical experts give
  ``sum_k g_k * ffn(x) = ffn(x)`` whatever the router says. With ``top_k == 1`` the gate is the raw probability
  ``p_e`` (< 1), which would scale the output: refused. Shared experts start with a zero down-projection, so
  they add nothing until they learn something.
- MoT: each branch holds the dense block's weights; the global attention is the dense one.

Keys follow ``Backbone``'s state dict (``layers.N.mlp.gate_up_proj.weight`` ...; no ``backbone.`` prefix).
"""

import re

import torch
from torch import nn

ROUTER_STD = 0.02  # small: identical experts make the router's choice irrelevant at step 0; noise breaks ties
_BRANCH = re.compile(r"^(layers\.\d+\.)branches\.\d+\.(.+)$")


def upcycle(
    dense_state: dict[str, torch.Tensor],
    target: nn.Module,
    generator: torch.Generator,
    skip: tuple[str, ...] = (),
    router_std: float = ROUTER_STD,
) -> dict[str, torch.Tensor]:
    """Weights for every entry of ``target.state_dict()`` (but ``skip``) from a dense backbone's ``dense_state``.

    A key present in both with the same shape is copied (so dense -> dense, or a kind to itself, is a plain
    copy); MoT branches and MoE experts are copies of the dense block / SwiGLU; routers are N(0, router_std)
    drawn from ``generator``. ``ValueError`` naming the keys when a target weight has no dense counterpart,
    shapes differ, a dense weight would go unused, or the MoE is top-1."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    problems: list[str] = []
    for key, current in target.state_dict().items():
        if key in skip:
            continue
        try:
            out[key] = _weight(key, current, dense_state, used, generator, router_std, target)
        except ValueError as err:
            problems.append(str(err))
    unused = sorted(set(dense_state) - used - set(skip))
    if unused:
        problems.append(f"dense weights with no place in the target: {unused[:5]}{' ...' if len(unused) > 5 else ''}")
    if problems:
        raise ValueError("cannot upcycle: " + "; ".join(problems[:5]))
    return out


def _weight(
    key: str,
    current: torch.Tensor,
    dense: dict[str, torch.Tensor],
    used: set[str],
    generator: torch.Generator,
    router_std: float,
    target: nn.Module,
) -> torch.Tensor:
    """The start of target weight ``key`` (shaped like ``current``)."""

    def take(name: str, shape: torch.Size | None = None) -> torch.Tensor:
        if name not in dense:
            raise ValueError(f"{key} needs dense weight {name}, which the checkpoint lacks")
        w = dense[name]
        if shape is not None and w.shape != shape:
            raise ValueError(f"{key} is {tuple(shape)} but dense {name} is {tuple(w.shape)}")
        used.add(name)
        return w.to(current.dtype)

    if key in dense and dense[key].shape == current.shape:
        return take(key)
    branch = _BRANCH.match(key)
    if branch:  # MoT: every branch a copy of the dense block
        return take(branch[1] + branch[2], current.shape).clone()
    prefix, _, name = key.rpartition("mlp.")
    if name in ("w_gate_up", "w_down"):  # MoE experts [E, in, out]: the dense projection, transposed
        experts = current.shape[0]
        if _top_k(target, prefix) == 1:
            raise ValueError(
                f"{key}: a top-1 MoE gates by the raw router probability (< 1), so copied experts would not "
                "reproduce the dense layer; set layers.top_k >= 2"
            )
        dense_name = prefix + ("mlp.gate_up_proj.weight" if name == "w_gate_up" else "mlp.down_proj.weight")
        w = take(dense_name)
        if w.t().shape != current.shape[1:]:
            raise ValueError(
                f"{key}: an expert is {tuple(current.shape[1:])} but the dense {dense_name}.T is {tuple(w.t().shape)}; "
                f"set layers.expert_hidden_dim = {w.shape[0] if name == 'w_down' else w.shape[0] // 2} "
                "(each expert as wide as the dense feed-forward)"
            )
        return w.t().unsqueeze(0).expand(experts, -1, -1).clone()
    if name == "router.weight":
        return torch.randn(current.shape, generator=generator).to(current.dtype) * router_std
    if name == "shared_experts.down_proj.weight":
        return torch.zeros_like(current)  # shared experts add nothing at step 0
    if name == "shared_experts.gate_up_proj.weight":
        return current.clone()  # its fresh init (the zero down-projection silences it)
    if key in dense:
        raise ValueError(f"{key} is {tuple(current.shape)} but the dense one is {tuple(dense[key].shape)}")
    raise ValueError(f"{key} has no dense counterpart")


def _top_k(target: nn.Module, prefix: str) -> int:
    """The ``top_k`` of the MoE feed-forward at ``prefix + 'mlp'`` (state-dict path)."""
    return int(target.get_submodule(prefix + "mlp").top_k)
