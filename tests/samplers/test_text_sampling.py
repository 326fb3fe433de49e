"""Next-token selection: greedy, temperature, top-k and top-p."""

import torch

from unimm.samplers.text import draw, inverse_cdf, select_next


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


def test_inverse_cdf_finds_the_category_of_each_uniform():
    probs = torch.tensor([[0.2, 0.0, 0.5, 0.3], [1.0, 1.0, 0.0, 2.0]])  # the second row unnormalised
    u = torch.tensor([[0.0], [0.0]])
    assert inverse_cdf(probs, u).tolist() == [0, 0]
    assert inverse_cdf(probs, torch.tensor([[0.2], [0.25]])).tolist() == [2, 1]  # a zero-mass category is skipped
    assert inverse_cdf(probs, torch.tensor([[0.75], [0.5]])).tolist() == [3, 3]
    assert inverse_cdf(probs, torch.tensor([[0.999999], [0.999999]])).tolist() == [3, 3]


def test_inverse_cdf_draws_follow_the_probabilities():
    """The path a GPU takes with a CPU generator, on the CPU: frequencies within 4 binomial s.d. of the truth."""
    p = torch.tensor([0.1, 0.6, 0.05, 0.25])
    n = 20000
    u = torch.rand(n, 1, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(inverse_cdf(p.expand(n, 4), u), minlength=4).float()
    sd = (n * p * (1 - p)).sqrt()
    assert ((counts - n * p).abs() < 4 * sd).all(), counts


def test_draw_keeps_multinomial_on_one_device():
    """On the generator's own device ``draw`` is torch.multinomial, so the CPU's seeded samples are unchanged."""
    probs = torch.rand(3, 5, 7).softmax(-1)
    got = draw(probs, torch.Generator().manual_seed(3))
    expected = torch.multinomial(probs.view(-1, 7), 1, generator=torch.Generator().manual_seed(3)).view(3, 5)
    assert torch.equal(got, expected)
