"""The MoE expert stage written in place (nn/expert_stage.py) against autograd's path of the same layer."""

import pytest
import torch

from unimm.nn import expert_stage
from unimm.nn.expert_stage import ExpertStage
from unimm.nn.moe import MoEFeedForward
from unimm.nn.onednn_linear import available as onednn_available
from unimm.nn.onednn_linear import onednn_linears

DIM, HIDDEN = 32, 48


def forward_backward(layer: MoEFeedForward, x: torch.Tensor, modality, fused: bool, monkeypatch) -> dict:
    """Output and every gradient of one forward + backward, on the in-place stage or on autograd's path."""
    calls = []
    real = expert_stage.ExpertStage.apply

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(expert_stage, "eligible", lambda *a: fused)
    monkeypatch.setattr(expert_stage.ExpertStage, "apply", counted)
    layer.zero_grad()
    x = x.clone().requires_grad_()
    y, aux = layer(x, modality)
    (y.square().sum() + sum(aux.values())).backward()
    assert len(calls) == int(fused)
    return {"y": y.detach(), "x": x.grad, **{n: p.grad.clone() for n, p in layer.named_parameters()}}


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("case", ["plain", "capacity", "groups", "shared", "idle-expert"])
def test_matches_autograd_path(case, top_k, monkeypatch):
    torch.manual_seed(0)
    kwargs = {
        "capacity": {"capacity_factor": 0.6},
        "groups": {"groups": [[0, 1, 2], [3, 4, 5]]},
        "shared": {"num_shared": 1},
    }.get(case, {})
    layer = MoEFeedForward(DIM, HIDDEN, num_experts=6, top_k=top_k, **kwargs)
    tokens = 3 if case == "idle-expert" else 40  # 3 tokens leave some of the 6 experts without rows
    x = torch.randn(2, tokens // 2 + 1, DIM)
    modality = torch.randint(0, 2, x.shape[:2])
    ref = forward_backward(layer, x, modality, False, monkeypatch)
    got = forward_backward(layer, x, modality, True, monkeypatch)
    if case == "idle-expert":
        assert (layer.last_stats["tokens_per_expert"] == 0).any()
    if case == "capacity":
        assert int(layer.last_stats["dropped"]) > 0
    assert got.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.skipif(not onednn_available(), reason="no oneDNN in this build")
def test_onednn_products_match(monkeypatch):
    """Inside onednn_linears the stage's products run on oneDNN (asked through onednn_linear.active) and agree
    with BLAS to float tolerance."""
    torch.manual_seed(0)
    layer = MoEFeedForward(DIM, HIDDEN, num_experts=4, top_k=2)
    x, modality = torch.randn(2, 24, DIM), None
    used = []
    real = expert_stage.inner_product
    monkeypatch.setattr(expert_stage, "inner_product", lambda *a: used.append(1) or real(*a))
    ref = forward_backward(layer, x, modality, True, monkeypatch)
    assert not used
    with onednn_linears():
        got = forward_backward(layer, x, modality, True, monkeypatch)
    assert len(used) == 4 * 4  # per expert: two forward products, two input-gradient products
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-4, rtol=1e-4, msg=name)


def test_eligible_only_for_plain_cpu_fp32():
    w = torch.zeros(2, 2)
    assert expert_stage.eligible(torch.zeros(2, 2), w)
    assert not expert_stage.eligible(torch.zeros(2, 2, dtype=torch.float64), w.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not expert_stage.eligible(torch.zeros(2, 2), w)


def test_default_layer_takes_the_stage_and_needs_no_graph_without_grad():
    torch.manual_seed(0)
    layer = MoEFeedForward(DIM, HIDDEN, num_experts=4, top_k=2).eval()
    x = torch.randn(1, 5, DIM)
    with torch.no_grad():
        y, _ = layer(x)
    assert y.shape == x.shape and y.grad_fn is None
    y2, _ = layer(x)
    nodes, seen = [y2.grad_fn], []
    while nodes:  # every node of the graph
        node = nodes.pop()
        seen.append(type(node).__name__)
        nodes += [n for n, _ in node.next_functions if n is not None]
    assert any(name.startswith("ExpertStage") for name in seen)
    torch.testing.assert_close(y2.detach(), y)


def test_in_place_false_keeps_autograd_ops(monkeypatch):
    """The bench's control: ``in_place=False`` never enters the stage and gives the same output."""
    torch.manual_seed(0)
    on, off = MoEFeedForward(DIM, HIDDEN, 4, 2), MoEFeedForward(DIM, HIDDEN, 4, 2, in_place=False)
    off.load_state_dict(on.state_dict())
    x = torch.randn(2, 9, DIM)
    y_on = on(x)[0]
    monkeypatch.setattr(expert_stage.ExpertStage, "apply", lambda *a: pytest.fail("stage entered"))
    torch.testing.assert_close(off(x)[0], y_on, atol=1e-6, rtol=1e-6)


def test_activation_checkpointing_recomputes_the_stage(monkeypatch):
    """Everything the stage keeps for backward goes through save_for_backward, so non-reentrant checkpointing's
    saved-tensor hooks drop it and recompute it: the stage runs twice, and the gradients are the plain ones."""
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    layer = MoEFeedForward(DIM, HIDDEN, 4, 2)
    x = torch.randn(2, 9, DIM)
    xr = x.clone().requires_grad_()
    layer(xr)[0].square().sum().backward()
    calls = []
    real = expert_stage.ExpertStage.forward
    monkeypatch.setattr(expert_stage.ExpertStage, "forward", staticmethod(lambda *a: calls.append(1) or real(*a)))
    layer.zero_grad()
    xc = x.clone().requires_grad_()
    checkpoint(lambda t: layer(t)[0], xc, use_reentrant=False).square().sum().backward()
    assert len(calls) == 2  # the forward, and its recomputation in backward
    torch.testing.assert_close(xc.grad, xr.grad)


def test_every_kept_activation_passes_the_saved_tensor_hooks():
    """The stage keeps its per-expert activations only through save_for_backward, where saved-tensor hooks (how
    checkpointing and offloading drop or move them) see them: 4 per expert with rows, besides the 5 inputs."""
    torch.manual_seed(0)
    layer = MoEFeedForward(DIM, HIDDEN, 4, 2)
    x = torch.randn(2, 9, DIM, requires_grad=True)
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        y = ExpertStage.apply(x.view(-1, DIM), layer.w_gate_up, layer.w_down, torch.rand(36), torch.arange(36) % 18,
                              [9, 0, 20, 7], False)  # fmt: skip
    assert len(packed) == 5 + 4 * 3  # three experts with rows
    y.sum().backward()
    assert x.grad is not None
