"""Sparse mixture-of-experts feed-forward, the ``mlp`` of a ``DenseBlock`` for layer kinds moe / modality-moe.

Routing is token choice, top-k (Switch Transformer, Fedus et al. 2021; GShard): a linear router gives
logits ``z = W_r x`` over ``E`` SwiGLU experts, ``p = softmax(z)``, each token goes to its ``k`` most
probable experts and the output is ``y = sum_{e in topk} g_e * expert_e(x)`` (+ always-on shared experts,
DeepSeekMoE, Dai et al. 2024). Two auxiliary losses keep the router healthy:

- load balancing (Switch): ``E * sum_i f_i * P_i`` with ``f_i`` the fraction of the ``T * k`` assignments
  sent to expert ``i`` (not differentiable) and ``P_i`` the mean router probability of expert ``i``; it is
  1 when routing is uniform and grows as it collapses onto few experts;
- router z-loss (ST-MoE, Zoph et al. 2022): ``mean_t logsumexp(z_t)^2``, keeps the logits small so the
  fp32 softmax stays well conditioned.

Modality-aware routing (MoMa, Lin et al. 2024) splits the experts into groups, one per modality: a token of
modality ``m`` only sees the logits of group ``m`` (the others are ``-inf``), so text and image tokens use
disjoint (or, if groups overlap, partly shared) experts.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from unimm.nn import expert_stage, onednn_linear
from unimm.nn.expert_stage import ExpertStage
from unimm.nn.mlp import SwiGLU


class MoEFeedForward(nn.Module):
    """Top-k routed SwiGLU experts, stored stacked: ``w_gate_up [E, dim, 2*hidden]`` (columns ``[gate | up]``)
    and ``w_down [E, hidden, dim]``, so expert ``e`` computes ``(silu(x Wg) * (x Wu)) Wd``.

    Gates: softmax over all (allowed) experts, then top-k, then the k gates are renormalised to sum to 1
    (Mixtral / Qwen-MoE), so the output scale does not depend on how peaked the router is. For ``top_k == 1``
    the gate is left as the raw probability ``p_e`` (Switch): renormalising would make it identically 1 and
    cut the router off from the task loss.

    ``capacity_factor``: in training mode each expert takes at most ``ceil(capacity_factor * T * k / E)``
    assignments; first choices of all tokens are served before second choices, earlier tokens before later
    ones; overflow assignments are dropped (contribute zero; the shared experts still run). Not applied in
    eval mode, so that decoding a token does not depend on what else is in the batch (cached == uncached).

    ``groups``: expert-index lists per modality, e.g. ``[[0, 1, 2, 3], [4, 5, 6, 7]]``; modality ids are
    clamped to ``len(groups) - 1`` and ``None`` means group 0. The balancing loss is computed inside each
    group (``E_g * sum_{i in g} f_i P_i`` with ``f, P`` over that group's tokens) and averaged over groups
    weighted by their token counts, so a uniform router still scores exactly 1. The z-loss uses the logits
    that enter the softmax, i.e. only the token's own group.

    ``in_place``: on CPU fp32 run the experts as one autograd function that writes every result where it belongs
    (``nn/expert_stage.py``); ``False`` keeps autograd's per-expert ops there too (the bench's control). Elsewhere
    (GPU, autocast, tracing, sharded parameters) autograd's ops run either way.

    After each forward ``last_stats`` holds detached routing statistics for logging: ``tokens_per_expert``
    [E] (kept assignments), ``dropped`` (assignments over capacity), ``router_entropy`` (mean, nats),
    ``aux_loss`` / ``z_loss`` (unweighted) and, when modality is given, ``tokens_per_expert_by_modality``
    [M, E]. Padding positions are routed like any other token and count in all of these.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        num_experts: int,
        top_k: int,
        num_shared: int = 0,
        capacity_factor: float | None = None,
        aux_weight: float = 0.01,
        z_weight: float = 1e-3,
        groups: list[list[int]] | None = None,
        in_place: bool = True,
    ) -> None:
        super().__init__()
        self.in_place = in_place
        self.dim, self.hidden_dim, self.num_experts, self.top_k = dim, hidden_dim, num_experts, top_k
        self.capacity_factor, self.aux_weight, self.z_weight = capacity_factor, aux_weight, z_weight
        self.groups = [list(g) for g in groups] if groups is not None else None
        if self.groups is not None:
            for g in self.groups:
                if not g or min(g) < 0 or max(g) >= num_experts or len(set(g)) != len(g):
                    raise ValueError(f"MoE group {g} must list distinct experts in [0, {num_experts})")
                if len(g) < top_k:
                    raise ValueError(f"MoE group {g} has fewer than top_k={top_k} experts")
        elif not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must be in [1, num_experts={num_experts}]")
        allowed = torch.zeros(len(self.groups or [0]), num_experts, dtype=torch.bool)  # [G, E]
        for i, g in enumerate(self.groups or [range(num_experts)]):
            allowed[i, list(g)] = True
        self.register_buffer("allowed", allowed, persistent=False)

        self.router = nn.Linear(dim, num_experts, bias=False)
        self.w_gate_up = nn.Parameter(torch.empty(num_experts, dim, 2 * hidden_dim))
        self.w_down = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))
        # num_shared SwiGLU experts of width hidden_dim always summed = one SwiGLU of width num_shared * hidden_dim
        self.shared_experts = SwiGLU(dim, num_shared * hidden_dim) if num_shared > 0 else None
        self.last_stats: dict[str, torch.Tensor] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each expert initialised like ``nn.Linear`` (uniform in +-1/sqrt(fan_in)), as a dense SwiGLU is."""
        nn.init.uniform_(self.w_gate_up, -1 / math.sqrt(self.dim), 1 / math.sqrt(self.dim))
        nn.init.uniform_(self.w_down, -1 / math.sqrt(self.hidden_dim), 1 / math.sqrt(self.hidden_dim))

    def expert(self, e: int, x: torch.Tensor, weights: tuple | None = None) -> torch.Tensor:
        """Expert ``e`` on tokens x [N, dim] -> [N, dim]; ``weights``: the experts' (gate-up, down) matrices as
        ``unbind`` gives them, which the forward takes once for all experts."""
        w_gate_up, w_down = weights if weights is not None else (self.w_gate_up, self.w_down)
        # F.linear with the transposed [in, out] matrix is the same product as x @ w (bit for bit), and runs
        # through oneDNN where train.matmul asks for it (nn/onednn_linear.py), as the dense layers' do
        gate, up = F.linear(x, w_gate_up[e].t()).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, w_down[e].t())

    def experts_autograd(
        self, x: torch.Tensor, tok: torch.Tensor, gate: torch.Tensor, counts: torch.Tensor
    ) -> torch.Tensor:
        """The experts' weighted outputs scattered back, ``[T, dim]``, as autograd ops: the general path (GPU,
        autocast, tracing, sharded parameters) of what ``nn/expert_stage.py`` computes in place on CPU fp32."""
        # one contiguous buffer, each expert on its own slice, weighted outputs scattered back
        buf = x.index_select(0, tok)  # not x[tok]: its backward (an accumulating index_put) is 2x slower
        # unbind once: its backward stacks the experts' gradients in one op, where indexing the parameter per expert
        # would give each expert a zero-filled full-size gradient to add up
        weights = (self.w_gate_up.unbind(0), self.w_down.unbind(0))
        chunks = enumerate(buf.split(counts.tolist()))
        outs = [self.expert(e, chunk, weights) for e, chunk in chunks if chunk.shape[0] > 0]
        y = x.new_zeros(x.shape[0], self.dim)
        if outs:
            out = torch.cat(outs)
            y = y.to(out.dtype).index_add_(0, tok, out * gate[:, None].to(out.dtype))
        return y

    def route(
        self, x: torch.Tensor, group: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [T, dim], group [T] -> (masked logits [T, E], probs [T, E], top-k experts [T, k], gates [T, k]).

        The router runs in fp32 (also under autocast): bf16 logits make the top-k choice noisy."""
        with torch.autocast(x.device.type, enabled=False):
            logits = F.linear(x.float(), self.router.weight.float())
        if self.groups is not None:
            logits = logits.masked_fill(~self.allowed[group], float("-inf"))
        probs = logits.softmax(dim=-1)
        top_p, top_e = probs.topk(self.top_k, dim=-1)
        gates = top_p / top_p.sum(dim=-1, keepdim=True) if self.top_k > 1 else top_p
        return logits, probs, top_e, gates

    def forward(
        self, x: torch.Tensor, modality: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x [B, L, dim], modality [B, L] or None -> (y [B, L, dim], {moe_aux_loss, moe_z_loss} weighted)."""
        shape = x.shape
        x = x.reshape(-1, self.dim)
        t, k, num_e = x.shape[0], self.top_k, self.num_experts
        num_groups = self.allowed.shape[0]
        if self.groups is not None and modality is not None:
            group = modality.reshape(-1).clamp(0, num_groups - 1)
        else:
            group = torch.zeros(t, dtype=torch.long, device=x.device)
        logits, probs, top_e, gates = self.route(x, group)

        # assignments in priority order: all first choices (token order), then all second choices, ...
        flat_e = top_e.t().reshape(-1)  # [k*T]
        flat_tok = torch.arange(t, device=x.device).repeat(k)
        flat_gate = gates.t().reshape(-1)
        order = flat_e.argsort(stable=True)  # group the assignments by expert, keeping priority inside each
        sorted_e, sorted_tok, sorted_gate = flat_e[order], flat_tok[order], flat_gate[order]
        counts = torch.bincount(flat_e, minlength=num_e)  # before capacity: feeds the balancing loss
        if self.capacity_factor is not None and self.training:
            capacity = math.ceil(self.capacity_factor * t * k / num_e)
            starts = counts.cumsum(0) - counts
            rank = torch.arange(k * t, device=x.device) - starts[sorted_e]  # position inside its expert
            keep = rank < capacity
            sorted_e, sorted_tok, sorted_gate = sorted_e[keep], sorted_tok[keep], sorted_gate[keep]
            kept = torch.bincount(sorted_e, minlength=num_e)
        else:
            kept = counts

        if self.in_place and expert_stage.eligible(x, self.w_gate_up, self.w_down):
            onednn = onednn_linear.active() and x.shape[0] > 1
            y = ExpertStage.apply(x, self.w_gate_up, self.w_down, sorted_gate, sorted_tok, kept.tolist(), onednn)
        else:
            y = self.experts_autograd(x, sorted_tok, sorted_gate, kept)
        if self.shared_experts is not None:
            shared, _ = self.shared_experts(x)
            y = y.to(shared.dtype) + shared

        # Switch balancing loss per group: E_g/(T k) * sum_i count_{g,i} * Psum_{g,i} / T_g, summed over g
        group_tok = torch.bincount(group, minlength=num_groups).clamp(min=1)  # T_g
        count_g = torch.bincount(group[flat_tok] * num_e + flat_e, minlength=num_groups * num_e)
        count_g = count_g.view(num_groups, num_e).float()
        psum_g = probs.new_zeros(num_groups, num_e).index_add_(0, group, probs)
        group_size = self.allowed.sum(-1).float()  # E_g
        aux = (group_size / (t * k) * (count_g * psum_g).sum(-1) / group_tok).sum()
        z = torch.logsumexp(logits, dim=-1).pow(2).mean()

        stats = {
            "tokens_per_expert": kept.detach(),
            "dropped": (k * t - kept.sum()).detach(),
            "router_entropy": torch.special.entr(probs).sum(-1).mean().detach(),
            "aux_loss": aux.detach(),
            "z_loss": z.detach(),
        }
        if modality is not None:
            num_mod = max(2, num_groups)
            mod = modality.reshape(-1).clamp(0, num_mod - 1)
            by_mod = torch.bincount(mod[sorted_tok] * num_e + sorted_e, minlength=num_mod * num_e)
            stats["tokens_per_expert_by_modality"] = by_mod.view(num_mod, num_e).detach()
        self.last_stats = stats
        return y.view(shape), {"moe_aux_loss": self.aux_weight * aux, "moe_z_loss": self.z_weight * z}
