"""New embedding rows are drawn around the pretrained rows' mean; kept rows are unchanged."""

import pytest
import torch

from unimm.nn.vocab_rows import resize_rows


def test_kept_rows_equal_and_new_rows_sit_near_the_mean_with_the_old_covariance_shape():
    old = torch.randn(400, 8) * torch.linspace(0.1, 2.0, 8) + 3.0
    new = resize_rows(old, 2400, 300, torch.Generator().manual_seed(0))
    assert new.shape == (2400, 8) and torch.equal(new[:300], old[:300])
    fresh = new[300:]
    mu, sigma = old.mean(0), old.std(0)
    torch.testing.assert_close(fresh.mean(0), mu, atol=1e-2, rtol=0)
    ratio = fresh.std(0) / (sigma * 1e-5**0.5)  # noise ~ N(0, 1e-5 Sigma): per-dimension std follows the old one
    assert ((ratio > 0.85) & (ratio < 1.15)).all()


def test_same_generator_same_rows_and_too_many_kept_rows_refused():
    old = torch.randn(20, 4)
    a = resize_rows(old, 30, 20, torch.Generator().manual_seed(3))
    b = resize_rows(old, 30, 20, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="cannot keep 21 rows"):
        resize_rows(old, 30, 21, torch.Generator())
