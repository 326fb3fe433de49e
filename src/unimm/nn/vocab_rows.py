"""Resizing a pretrained embedding or LM-head matrix to another vocabulary.

Rows of ids that mean the same token in both vocabularies are kept; every other row is drawn from
``N(mu, scale * Sigma)``, the mean and covariance of the pretrained rows (Hewitt 2021, "Initializing new word
embeddings"; ``transformers``' ``resize_token_embeddings(mean_resizing=True)``), so a new token's logit starts
close to the average token's instead of dominating or vanishing next to the pretrained ones.
"""

import torch

NOISE_SCALE = 1e-5  # the covariance is scaled down: new rows sit near the mean, a little apart from each other


def resize_rows(
    old: torch.Tensor, rows: int, keep: int, generator: torch.Generator, noise_scale: float = NOISE_SCALE
) -> torch.Tensor:
    """old [V_old, d] -> [rows, d]: rows ``< keep`` copied from ``old`` (``keep <= min(V_old, rows)``), the rest
    ``mu + noise`` with ``noise ~ N(0, noise_scale * Sigma)``, drawn from ``generator``."""
    if not 0 <= keep <= min(old.shape[0], rows):
        raise ValueError(f"cannot keep {keep} rows of a [{old.shape[0]}, {old.shape[1]}] matrix resized to {rows}")
    ref = old.double()
    mu = ref.mean(0)
    centred = ref - mu
    # noise = w @ centred with w ~ N(0, 1 / V_old): its covariance is centred.T @ centred / V_old = Sigma
    # (drawn in chunks of rows: w is [chunk, V_old], and V_old may be a large pretrained vocabulary)
    fresh = []
    for start in range(keep, rows, 64):
        n = min(64, rows - start)
        w = torch.randn(n, old.shape[0], generator=generator, dtype=torch.float64) / old.shape[0] ** 0.5
        fresh.append(mu + noise_scale**0.5 * (w @ centred))
    return torch.cat([ref[:keep], *fresh]).to(old.dtype)
