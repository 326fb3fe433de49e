"""LoRALinear: a fresh adapter changes nothing, merging equals the adapted layer, dropout is seeded."""

import torch
from torch import nn

from unimm.nn.attention import Attention
from unimm.nn.lora import LoRALinear, add_lora, lora_layers, merge_lora, seed_dropout


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(12, 20)


def test_fresh_adapter_leaves_the_output_unchanged_and_shares_the_weight():
    base = _linear()
    x = torch.randn(3, 5, 12)
    layer = LoRALinear.wrap(base, rank=4, alpha=8.0)
    assert layer.weight is base.weight and layer.bias is base.bias  # nothing copied
    assert torch.equal(layer(x), base(x))
    assert layer.lora_B.abs().sum() == 0 and layer.lora_A.abs().sum() > 0


def test_merged_layer_equals_the_adapted_one():
    layer = LoRALinear.wrap(_linear(), rank=4, alpha=8.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 5, 12)
    merged = layer.merged()
    assert type(merged) is nn.Linear
    assert not torch.allclose(layer(x), _linear()(x))  # the adapter does something
    torch.testing.assert_close(merged(x), layer(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(merged.weight, layer.weight + 2.0 * layer.lora_B @ layer.lora_A)


def test_fused_qkv_gets_one_adapter_over_q_k_and_v():
    torch.manual_seed(0)
    attn = Attention(dim=16, heads=4, kv_heads=2, layer_idx=0)
    (layer,) = add_lora(attn, ["qkv_proj"], rank=2, alpha=2.0, seed=3)
    assert layer.lora_B.shape == (16 + 8 + 8, 2) and layer.lora_A.shape == (2, 16)
    (again,) = add_lora(Attention(dim=16, heads=4, kv_heads=2, layer_idx=0), ["qkv_proj"], rank=2, alpha=2.0, seed=3)
    assert torch.equal(layer.lora_A, again.lora_A)  # drawn from the seed, not the global RNG
    assert merge_lora(attn) == ["qkv_proj"] and not lora_layers(attn)


def test_dropout_draws_from_the_seeded_generator_only():
    layer = LoRALinear.wrap(_linear(), rank=4, alpha=8.0, dropout=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 12)
    outs = []
    for seed in (7, 7, 8):
        seed_dropout(layer, seed)
        torch.manual_seed(seed * 100)  # the global RNG plays no part
        outs.append(layer(x))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    layer.eval()
    torch.testing.assert_close(layer(x), layer.merged()(x), rtol=1e-5, atol=1e-5)  # no dropout in eval
