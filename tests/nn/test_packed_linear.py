"""oneDNN products with packed weights: the same product as F.linear, packs that live as long as their weight."""

import gc

import pytest
import torch
import torch.nn.functional as F

from unimm.nn import packed_linear
from unimm.nn.packed_linear import PackedLinears, decode_linear, pack, packed_count

needs_onednn = pytest.mark.skipif(not packed_linear.available(), reason="this torch build has no oneDNN")


def _weight(out: int, inp: int, seed: int) -> torch.Tensor:
    """A decode weight: W [out, in] as the view of a contiguous [in, out] copy."""
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed)).t().contiguous().t()


@needs_onednn
@pytest.mark.parametrize("bias", [False, True])
def test_packed_product_is_the_linear_product(bias):
    w = _weight(24, 16, 0)
    b = torch.randn(24) if bias else None
    x = torch.randn(5, 1, 16)
    expected = F.linear(x, w, b)
    assert torch.allclose(decode_linear(x, w.t(), b), expected, atol=1e-5)  # no pack yet: MKL's product
    assert pack([w], rows=5) == 1 and pack([w], rows=5) == 0  # packed once per (weight, rows)
    assert torch.allclose(decode_linear(x, w.t(), b), expected, atol=1e-5)  # the pack for 5 rows
    assert torch.allclose(decode_linear(x[:3], w.t(), b), expected[:3], atol=1e-5)  # 3 rows: no pack, MKL


@needs_onednn
def test_packs_go_with_their_weights():
    before = packed_count()
    w = _weight(8, 4, 1)
    pack([w], rows=2)
    pack([w], rows=3)
    assert packed_count() == before + 2
    del w
    gc.collect()
    assert packed_count() == before  # a freed weight's address can never find a stale pack


def test_mode_routes_modules_through_the_op(monkeypatch):
    """Inside the mode every F.linear, an nn.Linear's included, runs as decode_linear(x, W.t(), bias)."""
    lin = torch.nn.Linear(6, 4)
    x = torch.randn(3, 6)
    calls = []

    def counting(x, wt, bias):
        calls.append((tuple(wt.shape), bias is not None))
        return decode_linear(x, wt, bias)

    monkeypatch.setattr(packed_linear, "decode_linear", counting)
    with torch.no_grad(), PackedLinears():
        out = lin(x)
    assert calls == [((6, 4), True)]
    assert torch.allclose(out, F.linear(x, lin.weight, lin.bias), atol=1e-6)
