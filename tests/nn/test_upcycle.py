"""Dense weights upcycled into MoE experts / MoT branches compute the dense layer's function at step 0."""

import pytest
import torch

from unimm.nn.backbone import Backbone, BackboneConfig
from unimm.nn.upcycle import upcycle
from unimm.settings import LAYERS

CFG = BackboneConfig(vocab_size=50, dim=32, depth=2, heads=4, kv_heads=2, hidden_dim=48)


def _upcycled(layers: dict) -> tuple[Backbone, Backbone]:
    torch.manual_seed(0)
    dense = Backbone(CFG).eval()
    target = Backbone(CFG, make_block=LAYERS.build(LAYERS.validate(layers, "layers"))).eval()
    state = upcycle(dense.state_dict(), target, torch.Generator().manual_seed(1))
    target.load_state_dict(state)
    return dense, target


@pytest.mark.parametrize(
    "layers",
    [
        {"kind": "moe", "experts": 4, "top_k": 2, "expert_hidden_dim": 48},
        {"kind": "moe", "experts": 4, "top_k": 3, "expert_hidden_dim": 48, "shared_experts": 1},
        {"kind": "modality-moe", "experts": 4, "top_k": 2, "expert_hidden_dim": 48},
        {"kind": "mot"},
        {"kind": "mot", "route": "role"},
    ],
    ids=["moe", "moe-shared", "modality-moe", "mot", "mot-role"],
)
def test_upcycled_layers_reproduce_the_dense_output(layers):
    dense, target = _upcycled(layers)
    x = torch.randn(2, 9, CFG.dim)
    pos = torch.arange(9).expand(2, 3, -1)
    modality = torch.randint(0, 2, (2, 9))
    with torch.no_grad():
        want, _ = dense(x, pos, modality)
        got, _ = target(x, pos, modality)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    routers = [m.router.weight for m in target.modules() if hasattr(m, "router")]
    assert all(r.abs().max() > 0 for r in routers)  # noise, not zeros: experts can drift apart
    if routers:  # the experts are copies, the router actually picks different ones for different tokens
        mlp = target.layers[0].mlp
        assert len(set(mlp.route(x.reshape(-1, CFG.dim), torch.zeros(18, dtype=torch.long))[2][:, 0].tolist())) > 1


def test_top_1_moe_is_refused_since_its_gate_is_not_renormalised():
    with pytest.raises(ValueError, match="layers.top_k >= 2"):
        _upcycled({"kind": "moe", "experts": 4, "top_k": 1, "expert_hidden_dim": 48})


def test_narrower_experts_are_refused_naming_the_key():
    with pytest.raises(ValueError, match="layers.expert_hidden_dim = 48"):
        _upcycled({"kind": "moe", "experts": 4, "top_k": 2})


def test_a_dense_to_dense_upcycle_is_a_copy_and_unused_weights_are_errors():
    dense, target = _upcycled({"kind": "dense"})
    for k, v in dense.state_dict().items():
        assert torch.equal(target.state_dict()[k], v)
    extra = {**dense.state_dict(), "layers.7.mlp.down_proj.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="layers.7.mlp.down_proj.weight"):
        upcycle(extra, target, torch.Generator())
