"""Next-token selection: greedy, temperature, top-k and top-p."""

import torch

from unimm.samplers.text import select_next


def test_greedy_is_argmax():
    logits = torch.tensor([[0.1, 3.0, -1.0], [5.0, 0.0, 4.9]])
    assert select_next(logits).tolist() == [1, 0]


def test_top_k_one_is_greedy_even_when_sampling():
    logits = torch.randn(16, 50)
    out = select_next(logits, temperature=1.5, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, logits.argmax(-1))


def test_top_p_keeps_only_the_nucleus():
    # probabilities 0.6, 0.3, 0.1: with top_p = 0.5 only the first survives, with 0.8 the first two
    logits = torch.tensor([[0.6, 0.3, 0.1]]).log().expand(2000, 3)
    g = torch.Generator().manual_seed(0)
    assert select_next(logits, 1.0, top_p=0.5, generator=g).unique().tolist() == [0]
    assert select_next(logits, 1.0, top_p=0.8, generator=g).unique().tolist() == [0, 1]


def test_temperature_sampling_follows_the_distribution():
    logits = torch.tensor([[0.75, 0.25]]).log().expand(20000, 2)
    draws = select_next(logits, 1.0, generator=torch.Generator().manual_seed(0)).float().mean()
    assert abs(draws.item() - 0.25) < 0.02
    sharp = select_next(logits, 0.25, generator=torch.Generator().manual_seed(0)).float().mean()
    assert sharp < 0.05  # low temperature concentrates on the mode
