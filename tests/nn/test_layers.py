"""Layer kinds as registered parts: settings per kind, their checks, the blocks each factory builds."""

import re

import pytest
import torch
import torch.nn.functional as F

from unimm.config import ConfigError, load_config
from unimm.nn.backbone import Backbone, BackboneConfig
from unimm.nn.block import DenseBlock
from unimm.nn.layers import MoELayersSettings
from unimm.nn.mlp import SwiGLU
from unimm.nn.moe import MoEFeedForward
from unimm.nn.mot import MoTBlock
from unimm.nn.rope import RotaryEmbedding
from unimm.settings import LAYERS

CFG = BackboneConfig(vocab_size=30, dim=16, depth=2, heads=4, kv_heads=2, hidden_dim=24)


def build(**section):
    return LAYERS.build(LAYERS.validate(section, "layers"))


@pytest.mark.parametrize("kind", ["dense", "moe", "modality-moe", "mot"])
def test_registry_builds_each_kind_into_a_backbone(kind):
    torch.manual_seed(0)
    factory = build(kind=kind)
    block = factory(CFG, 1)
    if kind == "mot":
        assert isinstance(block, MoTBlock) and len(block.branches) == 2
    else:
        assert isinstance(block, DenseBlock) and block.self_attn.layer_idx == 1
        assert isinstance(block.mlp, SwiGLU if kind == "dense" else MoEFeedForward)
    if kind in ("moe", "modality-moe"):
        assert block.mlp.hidden_dim == CFG.hidden_dim // 2  # top-2: dense-equal active parameters
        assert block.mlp.groups == ([[0, 1, 2, 3], [4, 5, 6, 7]] if kind == "modality-moe" else None)
    model = Backbone(CFG, make_block=factory)
    hidden, aux = model(torch.randn(2, 5, 16), torch.arange(5).expand(2, 3, -1), torch.randint(0, 2, (2, 5)))
    assert hidden.shape == (2, 5, 16)
    assert set(aux) == ({"moe_aux_loss", "moe_z_loss"} if "moe" in kind else set())


def test_settings_of_one_kind_reject_fields_of_another():
    with pytest.raises(ValueError, match=r"'layers\.experts' for layers kind 'dense'"):
        LAYERS.validate({"kind": "dense", "experts": 4}, "layers")
    with pytest.raises(ValueError, match=r"'layers\.top_k' for layers kind 'mot'"):
        LAYERS.validate({"kind": "mot", "top_k": 1}, "layers")
    assert LAYERS.validate({}, "layers").kind == "dense"
    assert LAYERS.validate({"kind": "moe", "shared_experts": 1}, "layers") == MoELayersSettings(shared_experts=1)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"kind": "moe", "experts": 2, "top_k": 3}, "layers.top_k (3) exceeds the 2 experts a token can route to"),
        ({"kind": "modality-moe", "experts": 5, "top_k": 1}, "layers.experts (5) must be even for modality-moe"),
        ({"kind": "modality-moe", "experts": 4, "top_k": 3}, "layers.top_k (3) exceeds the 2 experts"),
    ],
)
def test_expert_count_checks(section, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LAYERS.validate(section, "layers")
    LAYERS.validate({**section, "top_k": 2, "experts": 4}, "layers")  # the same kind with counts that fit


def test_registry_dense_block_equals_the_llama_block():
    """Same weights -> the same output as today's DenseBlock, written out: h = x + attn(norm1(x)),
    y = h + down(silu(gate(norm2(h))) * up(norm2(h))); and the checkpoint names are unchanged."""
    torch.manual_seed(0)
    direct = DenseBlock(16, 4, 2, 24, 0)
    with torch.no_grad():
        for p in direct.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # non-trivial norm weights
    block = build(kind="dense")(CFG, 0)
    assert list(block.state_dict()) == [
        "input_layernorm.weight",
        "self_attn.qkv_proj.weight",
        "self_attn.o_proj.weight",
        "post_attention_layernorm.weight",
        "mlp.gate_up_proj.weight",
        "mlp.down_proj.weight",
    ]
    block.load_state_dict(direct.state_dict())
    x, modality = torch.randn(2, 6, 16), torch.randint(0, 2, (2, 6))
    rope = RotaryEmbedding(4)(torch.arange(6).expand(2, 3, -1))
    h = x + direct.self_attn(direct.input_layernorm(x), None, rope)
    gate, up = direct.mlp.gate_up_proj(direct.post_attention_layernorm(h)).chunk(2, dim=-1)
    expected = h + direct.mlp.down_proj(F.silu(gate) * up)
    y, aux = block(x, modality, None, rope)
    assert aux == {}
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-6)


def test_moe_block_keeps_its_parameter_names():
    block = build(kind="modality-moe", experts=4, shared_experts=1)(CFG, 0)
    assert {k for k in block.state_dict() if k.startswith("mlp.")} == {
        "mlp.router.weight",
        "mlp.w_gate_up",
        "mlp.w_down",
        "mlp.shared_experts.gate_up_proj.weight",
        "mlp.shared_experts.down_proj.weight",
    }


def test_route_is_a_setting_of_the_kinds_that_route_by_id():
    assert LAYERS.validate({"kind": "mot"}, "layers").route == "modality"  # the default: routing as before
    assert LAYERS.validate({"kind": "modality-moe", "route": "role"}, "layers").route == "role"
    for kind in ("dense", "moe"):  # their blocks do not pick weights by id
        with pytest.raises(ValueError, match=rf"unknown config key 'layers\.route' for layers kind '{kind}'"):
            LAYERS.validate({"kind": kind, "route": "role"}, "layers")
    with pytest.raises(ConfigError) as err:
        load_config(None, ['layers={kind = "mot", route = "vit"}'])
    assert str(err.value) == "bad value for 'layers.route': 'vit' — allowed: 'modality' or 'role'"


def test_branch_ids_follow_the_route():
    """A read image (positions 1-2) goes to branch 0 by role, a generated one (4-5) to branch 1 by either."""
    modality = torch.tensor([[0, 1, 1, 0, 1, 1, 0]])
    generated = torch.tensor([[False, False, False, False, True, True, False]])
    for section in ({"kind": "dense"}, {"kind": "moe"}, {"kind": "mot"}, {"kind": "modality-moe"}):
        assert torch.equal(build(**section).branch_ids(modality, generated), modality)
    for kind in ("mot", "modality-moe"):
        ids = build(kind=kind, route="role").branch_ids(modality, generated)
        assert ids.tolist() == [[0, 0, 0, 0, 1, 1, 0]]


def test_rope_with_roll_and_signed_sine_is_llamas_rotate_half_bit_for_bit():
    """``apply_rope`` = ``x * cos + rotate_half(x) * sin`` exactly, on 3-axis positions (images) and text."""
    from unimm.nn.rope import apply_rope, rotate_half

    torch.manual_seed(0)
    rotary = RotaryEmbedding(8)
    positions = torch.stack([torch.arange(5).expand(3, -1), torch.randint(0, 7, (3, 5))])  # text, then 2-D coords
    for pos in positions:
        cos, signed_sin = rotary(pos.unsqueeze(0).expand(2, -1, -1))
        b, _, length = 2, 3, 5
        angles = pos.float()[rotary.axis].T * rotary.inv_freq  # each frequency's own axis
        sin = torch.cat((angles, angles), -1).sin().expand(b, 1, length, -1)
        assert torch.equal(signed_sin, torch.cat((-sin[..., :4], sin[..., 4:]), -1))
        x = torch.randn(b, 4, length, 8)
        assert torch.equal(apply_rope(x, cos, signed_sin), x * cos + rotate_half(x) * sin)
