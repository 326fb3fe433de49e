"""EMA of weights: bias-corrected, so the random init carries no weight however short the run."""

import pytest
import torch
from torch import nn

from unimm.optim import EMA


def _walk(model: nn.Linear, ema: EMA, steps: int, seed: int = 0) -> list[torch.Tensor]:
    """Set the weights to a fresh random value ``steps`` times, updating the EMA each time."""
    g = torch.Generator().manual_seed(seed)
    seen = []
    for _ in range(steps):
        with torch.no_grad():
            model.weight.copy_(torch.randn(model.weight.shape, generator=g))
        seen.append(model.weight.detach().clone())
        ema.update(model)
    return seen


@pytest.mark.parametrize("decay, steps", [(0.995, 3), (0.9, 40), (0.5, 7)])
def test_ema_is_the_bias_corrected_weighted_average(decay, steps):
    model = nn.Linear(4, 3, bias=False)
    init = model.weight.detach().clone()
    ema = EMA(model, decay)
    seen = _walk(model, ema, steps)
    w = torch.tensor([(1 - decay) * decay ** (steps - 1 - i) for i in range(steps)], dtype=torch.float64)
    expected = (torch.stack(seen).double() * (w / w.sum()).view(-1, 1, 1)).sum(0)
    torch.testing.assert_close(ema.shadow["weight"].double(), expected, rtol=1e-5, atol=1e-6)
    assert ema.updates == steps
    # the uncorrected average would keep decay**steps of the init: 98.5 % of it after 3 steps at 0.995
    assert not torch.allclose(ema.shadow["weight"], decay**steps * init + (1 - decay**steps) * expected.float())


def test_first_update_copies_the_weights():
    model = nn.Linear(4, 3)
    ema = EMA(model, 0.999)
    _walk(model, ema, 1, seed=3)
    torch.testing.assert_close(ema.shadow["weight"], model.weight.detach(), rtol=0, atol=0)
