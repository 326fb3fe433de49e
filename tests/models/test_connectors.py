"""Connectors: output shapes, query counts, and that gradients reach every part."""

import pytest
import torch

from unimm.settings import CONNECTORS


def build(kind: str, d_in: int, d_out: int, **settings) -> torch.nn.Module:
    return CONNECTORS.build(CONNECTORS.validate({"kind": kind, **settings}, "reader.connector"), d_in, d_out)


@pytest.mark.parametrize("kind", CONNECTORS.kinds())
def test_shapes_and_gradients(kind):
    conn = build(kind, 24, 32, **({} if kind in ("linear", "mlp") else {"queries": 5}))
    feats = torch.randn(3, 49, 24, requires_grad=True)
    out = conn(feats)
    expected_tokens = 49 if kind in ("linear", "mlp") else 5
    assert out.shape == (3, expected_tokens, 32)
    out.square().mean().backward()
    assert feats.grad.abs().sum() > 0
    assert all(p.grad is not None for p in conn.parameters())


def test_every_connector_kind_is_registered():
    assert CONNECTORS.kinds() == ["linear", "mlp", "qformer", "resampler"]


def test_query_connectors_pool_any_number_of_features():
    conn = build("resampler", 8, 16, queries=4)
    assert conn(torch.randn(2, 7, 8)).shape == conn(torch.randn(2, 100, 8)).shape == (2, 4, 16)


def test_qformer_queries_see_each_other_resampler_queries_do_not():
    torch.manual_seed(0)
    feats = torch.randn(1, 10, 8)
    for kind, coupled in (("qformer", True), ("resampler", False)):
        conn = build(kind, 8, 16, queries=3).eval()
        base = conn(feats)
        with torch.no_grad():
            conn.queries[0] += torch.randn(16)  # perturb one query: does another query's output move?
        moved = (conn(feats)[0, 1] - base[0, 1]).abs().max() > 1e-6
        assert bool(moved) == coupled, kind


def test_unknown_connector_is_named():
    with pytest.raises(ValueError, match=r"'perceiver'.*allowed: linear, mlp, qformer, resampler"):
        CONNECTORS.cls("perceiver")
    with pytest.raises(ValueError) as e:
        CONNECTORS.validate({"kind": "perceiver"}, "reader.connector")
    assert "reader.connector.kind" in str(e.value) and "perceiver" in str(e.value) and "allowed" in str(e.value)


def test_field_of_another_connector_kind_is_named():
    with pytest.raises(ValueError, match="unknown config key 'reader.connector.queries' for connector kind 'mlp'"):
        build("mlp", 8, 16, queries=4)
