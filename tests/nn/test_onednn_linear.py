"""oneDNN linear layers: the same values and gradients as F.linear, counted FLOPs alike, and only where eligible."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from unimm.nn.onednn_linear import available, onednn_linears

pytestmark = pytest.mark.skipif(not available(), reason="this torch build has no oneDNN")


def _grad_fn(y: torch.Tensor) -> str:
    return type(y.grad_fn).__name__


@pytest.mark.parametrize("bias", [False, True])
def test_values_and_gradients_are_the_linear_layers(bias):
    torch.manual_seed(0)
    lin = torch.nn.Linear(24, 40, bias=bias)
    x = torch.randn(3, 7, 24, requires_grad=True)
    grad = torch.randn(3, 7, 40)

    def run(onednn: bool):
        lin.zero_grad(set_to_none=True)
        x.grad = None
        with onednn_linears(onednn):
            y = lin(x)
        y.backward(grad)
        return y.detach(), _grad_fn(y), x.grad.clone(), {n: p.grad.clone() for n, p in lin.named_parameters()}

    y0, fn0, gx0, gp0 = run(False)
    y1, fn1, gx1, gp1 = run(True)
    assert fn1 == "OneDNNLinearBackward" and fn0 != fn1  # the layer really ran through oneDNN
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx1, gx0, rtol=1e-5, atol=1e-5)
    for name in gp0:
        torch.testing.assert_close(gp1[name], gp0[name], rtol=1e-5, atol=1e-5)


def test_ineligible_products_pass_through():
    """One row, bf16 operands, an autocast region: torch's own kernels, unchanged."""
    lin = torch.nn.Linear(8, 4)
    with onednn_linears():
        assert _grad_fn(lin(torch.randn(5, 8))) == "OneDNNLinearBackward"
        assert _grad_fn(lin(torch.randn(1, 8))) != "OneDNNLinearBackward"
        assert _grad_fn(lin.to(torch.bfloat16)(torch.randn(5, 8, dtype=torch.bfloat16))) != "OneDNNLinearBackward"
        lin.float()
        with torch.autocast("cpu", torch.bfloat16):
            y = lin(torch.randn(5, 8))
        assert y.dtype == torch.bfloat16 and _grad_fn(y) != "OneDNNLinearBackward"


def test_flops_are_counted_as_for_blas():
    """FlopCounterMode sees oneDNN's inner product: a step counts the same FLOPs either way (train.flops_every)."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.SiLU(), torch.nn.Linear(32, 8))
    x = torch.randn(4, 10, 16)

    def count(onednn: bool) -> int:
        with FlopCounterMode(display=False) as meter, onednn_linears(onednn):
            mlp(x).sum().backward()
        return meter.get_total_flops()

    # forward and weight gradients of both layers, the input gradient of the second (x needs none)
    assert count(True) == count(False) == 2 * 40 * (2 * 16 * 32 + 3 * 32 * 8)
