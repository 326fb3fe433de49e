"""MoE feed-forward and the block carrying it: routing against a per-token reference, capacity, aux losses, caching."""

import math

import pytest
import torch
import torch.nn.functional as F

from unimm.nn.block import DenseBlock
from unimm.nn.kv_cache import KVCache
from unimm.nn.moe import MoEFeedForward
from unimm.nn.rope import RotaryEmbedding

DIM, HIDDEN = 16, 24


def naive_moe_reference(layer: MoEFeedForward, x: torch.Tensor, modality: torch.Tensor | None) -> torch.Tensor:
    """Token by token: router softmax (group-masked), top-k, gates, sum of its experts, plus shared experts."""
    flat = x.reshape(-1, x.shape[-1])
    mods = modality.reshape(-1).tolist() if modality is not None else [0] * flat.shape[0]
    rows = []
    for tok, m in zip(flat, mods, strict=True):
        logits = layer.router.weight.float() @ tok.float()
        if layer.groups is not None:
            allowed = torch.zeros_like(logits, dtype=torch.bool)
            allowed[layer.groups[min(m, len(layer.groups) - 1)]] = True
            logits = logits.masked_fill(~allowed, float("-inf"))
        p = logits.softmax(-1)
        top_p, top_e = p.topk(layer.top_k)
        gates = top_p / top_p.sum() if layer.top_k > 1 else top_p
        y = torch.zeros_like(tok)
        for g, e in zip(gates, top_e.tolist(), strict=True):
            w_gate, w_up = layer.w_gate_up[e].chunk(2, dim=-1)
            y = y + g * ((F.silu(tok @ w_gate) * (tok @ w_up)) @ layer.w_down[e])
        if layer.shared_experts is not None:
            y = y + layer.shared_experts(tok)[0]
        rows.append(y)
    return torch.stack(rows).view_as(x)


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("num_shared", [0, 1])
def test_matches_per_token_reference(top_k, num_shared):
    torch.manual_seed(0)
    layer = MoEFeedForward(DIM, HIDDEN, num_experts=4, top_k=top_k, num_shared=num_shared)
    x = torch.randn(2, 7, DIM)
    y, aux = layer(x)
    torch.testing.assert_close(y, naive_moe_reference(layer, x, None), atol=1e-5, rtol=1e-5)
    assert set(aux) == {"moe_aux_loss", "moe_z_loss"}
    assert int(layer.last_stats["tokens_per_expert"].sum()) == 14 * top_k and int(layer.last_stats["dropped"]) == 0


def test_gradients_reach_router_and_selected_experts():
    torch.manual_seed(0)
    layer = MoEFeedForward(DIM, HIDDEN, num_experts=6, top_k=2, num_shared=1)
    x = torch.randn(1, 3, DIM, requires_grad=True)  # 6 assignments: some of the 6 experts stay unused
    y, aux = layer(x)
    (y.square().sum() + sum(aux.values())).backward()
    used = layer.last_stats["tokens_per_expert"] > 0
    assert layer.router.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    for e in range(6):
        has_grad = layer.w_gate_up.grad[e].abs().sum() > 0 and layer.w_down.grad[e].abs().sum() > 0
        assert bool(has_grad) == bool(used[e])
    assert layer.shared_experts.down_proj.weight.grad.abs().sum() > 0


def test_top1_router_gets_task_gradient():
    """With top-1 the gate is the raw probability (Switch), so the task loss alone trains the router."""
    torch.manual_seed(0)
    layer = MoEFeedForward(DIM, HIDDEN, num_experts=4, top_k=1)
    y, _ = layer(torch.randn(2, 5, DIM))
    y.square().sum().backward()
    assert layer.router.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("num_shared", [0, 1])
def test_capacity_drops_overflow_assignments(num_shared):
    torch.manual_seed(0)
    layer = MoEFeedForward(DIM, HIDDEN, num_experts=4, top_k=1, num_shared=num_shared, capacity_factor=0.5)
    x = torch.randn(2, 8, DIM)
    capacity = math.ceil(0.5 * 16 * 1 / 4)  # 2 tokens per expert
    choice = (x.reshape(16, DIM) @ layer.router.weight.T).argmax(-1).tolist()
    seen = [0] * 4
    dropped = []
    for e in choice:  # earlier tokens keep their place
        seen[e] += 1
        dropped.append(seen[e] > capacity)
    assert sum(dropped) > 0

    y, _ = layer.train()(x)
    stats = layer.last_stats
    assert int(stats["dropped"]) == sum(dropped)
    assert int(stats["tokens_per_expert"].sum()) == 16 - sum(dropped)
    assert (stats["tokens_per_expert"] <= capacity).all()
    ref = naive_moe_reference(layer, x, None).reshape(16, DIM)
    shared = layer.shared_experts(x.reshape(16, DIM))[0] if num_shared else torch.zeros(16, DIM)
    drop = torch.tensor(dropped)
    torch.testing.assert_close(y.reshape(16, DIM)[drop], shared[drop], atol=1e-6, rtol=0)  # routed part is zero
    torch.testing.assert_close(y.reshape(16, DIM)[~drop], ref[~drop], atol=1e-5, rtol=1e-5)

    y_eval, _ = layer.eval()(x)  # no capacity at inference
    assert int(layer.last_stats["dropped"]) == 0
    torch.testing.assert_close(y_eval, ref.view_as(x), atol=1e-5, rtol=1e-5)


def test_top2_capacity_serves_first_choices_first():
    torch.manual_seed(1)
    layer = MoEFeedForward(DIM, HIDDEN, num_experts=4, top_k=2, capacity_factor=1.0).train()
    x = torch.randn(1, 16, DIM)
    layer(x)
    stats = layer.last_stats
    assert int(stats["tokens_per_expert"].sum()) + int(stats["dropped"]) == 32
    assert (stats["tokens_per_expert"] <= 8).all()


@pytest.mark.parametrize("groups", [None, [[0, 1, 2], [3, 4, 5]]])
def test_uniform_router_balance_loss_is_one(groups):
    """With a zero router every allowed expert has P_i = 1/E_g, so E_g * sum_i f_i P_i = 1 whatever f is,
    and logsumexp of E_g zero logits is log E_g."""
    layer = MoEFeedForward(DIM, HIDDEN, num_experts=6, top_k=2, aux_weight=0.5, z_weight=0.25, groups=groups)
    torch.nn.init.zeros_(layer.router.weight)
    modality = torch.tensor([[0, 1, 1, 0, 1]]) if groups else None
    _, aux = layer(torch.randn(1, 5, DIM), modality)
    torch.testing.assert_close(aux["moe_aux_loss"], torch.tensor(0.5))
    e_g = 3 if groups else 6
    torch.testing.assert_close(aux["moe_z_loss"], torch.tensor(0.25 * math.log(e_g) ** 2))


def test_aux_losses_match_formulas():
    torch.manual_seed(0)
    layer = MoEFeedForward(DIM, HIDDEN, num_experts=4, top_k=2, aux_weight=0.01, z_weight=1e-3)
    torch.nn.init.normal_(layer.router.weight, std=1.0)  # a collapsed-ish router: loss well above 1
    x = torch.randn(3, 6, DIM)
    _, aux = layer(x)
    logits = x.reshape(18, DIM) @ layer.router.weight.T
    p = logits.softmax(-1)
    f = F.one_hot(p.topk(2).indices, 4).sum(1).float().mean(0) / 2  # fraction of the 36 assignments
    torch.testing.assert_close(aux["moe_aux_loss"], 0.01 * 4 * (f * p.mean(0)).sum())
    torch.testing.assert_close(aux["moe_z_loss"], 1e-3 * torch.logsumexp(logits, -1).square().mean())
    assert layer.last_stats["aux_loss"] > 1.0
    torch.testing.assert_close(layer.last_stats["router_entropy"], -(p * p.log()).sum(-1).mean())
    assert not any(v.requires_grad for v in layer.last_stats.values())


def test_modality_groups_keep_experts_apart():
    torch.manual_seed(0)
    groups = [[0, 1, 2, 3], [4, 5, 6, 7]]
    layer = MoEFeedForward(DIM, HIDDEN, num_experts=8, top_k=2, num_shared=1, groups=groups)
    x = torch.randn(2, 12, DIM)
    modality = torch.randint(0, 2, (2, 12))
    y, _ = layer(x, modality)
    by_mod = layer.last_stats["tokens_per_expert_by_modality"]
    assert by_mod[0, 4:].sum() == 0 and by_mod[1, :4].sum() == 0
    assert by_mod[0].sum() == 2 * (modality == 0).sum() and by_mod[1].sum() == 2 * (modality == 1).sum()
    torch.testing.assert_close(y, naive_moe_reference(layer, x, modality), atol=1e-5, rtol=1e-5)
    layer(x, None)  # no modality: everything is text, routed in group 0
    assert layer.last_stats["tokens_per_expert"][4:].sum() == 0


def moe_block(heads: int, kv_heads: int, **moe) -> DenseBlock:
    """The dense block with a routed feed-forward, as layer kinds moe / modality-moe build it."""
    return DenseBlock(DIM, heads, kv_heads, HIDDEN, 0, make_mlp=lambda: MoEFeedForward(DIM, HIDDEN, **moe))


def _block_inputs(b: int, length: int, heads: int):
    rotary = RotaryEmbedding(DIM // heads)
    pos = torch.arange(length).expand(b, 3, -1)
    return rotary(pos)


def test_block_cached_decoding_equals_full_forward():
    torch.manual_seed(0)
    block = moe_block(4, 2, num_experts=4, top_k=2, num_shared=1, groups=[[0, 1], [2, 3]]).eval()
    b, length = 2, 9
    x = torch.randn(b, length, DIM)
    modality = torch.randint(0, 2, (b, length))
    cos, sin = _block_inputs(b, length, 4)
    with torch.no_grad():
        full, aux = block(x, modality, None, (cos, sin), None)
        assert set(aux) == {"moe_aux_loss", "moe_z_loss"} and all(v.dim() == 0 for v in aux.values())
        cache = KVCache(1, 16)
        steps = []
        for s, e in [(0, 4), (4, 5), (5, 6), (6, 9)]:  # prefill, two single tokens, a chunk
            out, _ = block(x[:, s:e], modality[:, s:e], None, (cos[:, :, s:e], sin[:, :, s:e]), cache)
            cache.advance(e - s)
            steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_block_cached_decoding_with_mask_and_no_modality():
    torch.manual_seed(0)
    block = moe_block(4, 4, num_experts=4, top_k=1).eval()
    b, length = 2, 6
    x = torch.randn(b, length, DIM)
    mask = torch.ones(length, length, dtype=torch.bool).tril().expand(b, -1, -1).clone()
    mask[0, :, 0] = False  # row 0 is left-padded: no one attends to its first position
    mask[0, 0, 0] = True
    cos, sin = _block_inputs(b, length, 4)
    with torch.no_grad():
        full, _ = block(x, None, mask, (cos, sin))
        cache = KVCache(1, length)
        out, _ = block(x[:, :3], None, mask[:, :3, :3], (cos[:, :, :3], sin[:, :, :3]), cache)
        steps = [out]
        cache.advance(3)
        for i in range(3, length):
            out, _ = block(
                x[:, i : i + 1], None, mask[:, i : i + 1, : i + 1], (cos[:, :, i : i + 1], sin[:, :, i : i + 1]), cache
            )
            cache.advance(1)
            steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_block_gradients_and_stats():
    torch.manual_seed(0)
    block = moe_block(2, 1, num_experts=4, top_k=2, capacity_factor=1.0).train()
    x = torch.randn(2, 10, DIM)
    cos, sin = _block_inputs(2, 10, 2)
    y, aux = block(x, torch.zeros(2, 10, dtype=torch.long), None, (cos, sin))
    (y.mean() + sum(aux.values())).backward()
    stats = block.mlp.last_stats
    assert int(stats["tokens_per_expert"].sum()) == 20 * 2 - int(stats["dropped"])
    assert stats["tokens_per_expert_by_modality"][1].sum() == 0
    assert block.mlp.router.weight.grad.abs().sum() > 0
    assert block.self_attn.qkv_proj.weight.grad.abs().sum() > 0


def test_backbone_with_moe_blocks_sums_aux_and_caches():
    from unimm.nn.backbone import Backbone, BackboneConfig
    from unimm.settings import LAYERS

    torch.manual_seed(0)
    cfg = BackboneConfig(vocab_size=40, dim=DIM, depth=2, heads=4, kv_heads=2, hidden_dim=HIDDEN)
    model = Backbone(cfg, LAYERS.build(LAYERS.validate({"kind": "moe", "experts": 4}, "layers"))).eval()
    ids = torch.randint(0, 40, (2, 7))
    with torch.no_grad():
        _, aux = model(model.embed_tokens(ids), torch.arange(7).expand(2, 3, -1))
        layer_sum = sum(float(layer.mlp.last_stats["aux_loss"]) for layer in model.layers) * 0.01
        assert abs(float(aux["moe_aux_loss"]) - layer_sum) < 1e-6
        full = model.lm_logits(ids)
        cache = model.new_cache(8)
        steps = [model.lm_logits(ids[:, :4], cache)] + [model.lm_logits(ids[:, i : i + 1], cache) for i in range(4, 7)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
