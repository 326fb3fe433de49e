"""VectorQuantizer: nearest-code lookup, straight-through gradient, EMA learning, dead-code restart."""

import torch

from unimm.tokenizers.quantizer import VectorQuantizer


def test_assigns_the_nearest_code():
    vq = VectorQuantizer(16, 3, ema_decay=None).eval()
    z = torch.randn(2, 3, 4, 5)
    _, idx, _ = vq(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    brute = torch.cdist(flat, vq.codebook).argmin(-1)
    assert torch.equal(idx.flatten(), brute)


def test_cosine_lookup_when_normalised():
    vq = VectorQuantizer(8, 4, l2_normalize=True, ema_decay=None).eval()
    z = torch.randn(1, 4, 2, 2)
    z_q, idx, _ = vq(z)
    flat = torch.nn.functional.normalize(z.permute(0, 2, 3, 1).reshape(-1, 4), dim=-1)
    codes = torch.nn.functional.normalize(vq.codebook, dim=-1)
    assert torch.equal(idx.flatten(), (flat @ codes.T).argmax(-1))
    torch.testing.assert_close(z_q.norm(dim=1), torch.ones(1, 2, 2))


def test_straight_through_gradient_reaches_the_encoder_and_codebook_loss_the_codes():
    vq = VectorQuantizer(8, 3, ema_decay=None)
    z = torch.randn(2, 3, 2, 2, requires_grad=True)
    z_q, _, losses = vq(z)
    (z_q * torch.arange(3.0).view(1, 3, 1, 1)).sum().backward(retain_graph=True)
    torch.testing.assert_close(z.grad, torch.arange(3.0).view(1, 3, 1, 1).expand_as(z))  # identity Jacobian
    assert vq.codebook.grad is None  # z_q's value comes from the codebook but its gradient does not
    losses["codebook_loss"].backward()
    assert vq.codebook.grad.abs().sum() > 0


def test_ema_codebook_learns_clusters_and_reports_usage():
    torch.manual_seed(0)
    centres = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])
    vq = VectorQuantizer(4, 2, ema_decay=0.9, dead_threshold=0.5)
    for _ in range(100):
        pts = centres[torch.randint(0, 4, (256,))] + 0.1 * torch.randn(256, 2)
        _, _, stats = vq(pts.T.reshape(1, 2, 16, 16))
    dist = torch.cdist(centres, vq.codebook).min(-1).values
    assert dist.max() < 0.3  # every cluster owns a code
    assert stats["usage"] == 1.0 and stats["perplexity"] > 3.5


def test_dead_codes_restart_at_encoder_outputs():
    vq = VectorQuantizer(4, 2, ema_decay=0.5, dead_threshold=0.5)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0], [200.0, 200.0], [300.0, 300.0]]))
        vq.ema_sum.copy_(vq.codebook)
    data = torch.randn(1, 2, 8, 8) * 0.1
    for _ in range(3):
        vq(data)
    assert torch.cdist(vq.codebook, data.flatten(2)[0].T).min(-1).values.max() < 1.0  # far codes pulled in


def test_dead_code_restarts_draw_from_the_given_generator_not_the_global_rng():
    """The restart picks come from the fit's generator, so a fitted codebook does not depend on what else drew
    from the global RNG before the fit (e.g. the model's size)."""

    def codebook_after_restart(global_seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        vq = VectorQuantizer(8, 2, ema_decay=0.5, dead_threshold=100.0).train()  # every code restarts
        z = torch.randn(1, 2, 4, 4)
        torch.manual_seed(global_seed)
        vq(z, torch.Generator().manual_seed(7))
        return vq.codebook.clone()

    assert torch.equal(codebook_after_restart(1), codebook_after_restart(2))
