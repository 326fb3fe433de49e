"""Joint masking (``text.joint``, UniDisc): one masking time per example, shared by its text and its image codes.

UniDisc (Swerdlow et al. 2025) trains one masked discrete diffusion over the whole multimodal sequence: per
example one time ``t`` is drawn, and every corruptible text token and every image code of the example is
replaced by [MASK] independently with probability ``t`` (the linear schedule alpha_t = 1 - t). Here the masked
text objective draws ``t`` (``MaskedText.corrupt``: ``t ~ Beta(text.mask_alpha, 1)``, clamped to
``[T_MIN, 1]``) and hands it to the writer (``Writer.joint_inputs``) as a ``JointMask``; both modalities
score their masked positions with ``masked_loss``:

- by default the mean cross-entropy over the masked positions (as without joint masking);
- with ``text.elbo_weight``, MDLM's form ``sum(CE / t) / N``, each masked position's loss weighted by ``1 / t``
  of its example and the sum divided by the number ``N`` of corruptible positions (masked or not) in the batch.
  With ``t ~ U(0, 1)`` (``mask_alpha = 1``) this is an unbiased estimate of the per-token negative ELBO, an
  upper bound on the NLL; with ``mask_alpha > 1`` the times are skewed towards 1 and it is that bound's
  integrand under another weighting of ``t``, no longer the bound itself. ``t >= T_MIN`` keeps the weight
  at most ``1 / T_MIN``.

With ``text.joint_fraction`` < 1 only that share of the examples is masked jointly; each other example is
masked *conditionally*, as MMaDA does: at its own ``t``, only what it produces (an answer, or a generated
image's codes) is masked, while its condition (the t2i prompt, the question, a read image) stays clean, the
way sampling sees it. ``JointMask.conditional`` marks those examples and ``for_images`` gives each image its
time: its example's, or 0 (never masked) for an image that a conditional example reads.
"""

from dataclasses import dataclass

import torch

T_MIN = 1e-3  # joint masking times are clamped to [T_MIN, 1]: the ELBO weight 1 / t is at most 1000


@dataclass
class JointMask:
    """The masking times a text objective shares with the writer."""

    t: torch.Tensor  # [N] masking time of each example (or of each image), in [T_MIN, 1]; 0: never masked
    elbo: bool  # weight each masked position's loss by 1 / t (``masked_loss``)
    conditional: torch.Tensor | None = None  # [N] bool: examples masked only on what they produce

    def select(self, index: torch.Tensor) -> "JointMask":
        """The times of ``index`` (e.g. each image's row), same weighting."""
        cond = None if self.conditional is None else self.conditional[index]
        return JointMask(self.t[index], self.elbo, cond)

    def for_images(self, rows: torch.Tensor, generated: torch.Tensor) -> "JointMask":
        """Each image's time from its example ``rows`` [G]; an image that a conditional example reads (not
        ``generated`` [G]) gets 0: it stays clean and carries no loss."""
        mask = self.select(rows)
        if mask.conditional is None:
            return mask
        clean = mask.conditional & ~generated.to(mask.t.device)
        return JointMask(mask.t.masked_fill(clean, 0.0), self.elbo)

    def corruptible_codes(self, codes_per_image: int) -> int:
        """The image positions that could have been masked: every code of every image whose time is not 0."""
        return int((self.t > 0).sum()) * codes_per_image


def bernoulli_mask(t: torch.Tensor, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """[N, length] bool: each position masked independently with its row's probability ``t`` [N]."""
    return torch.rand(t.shape[0], length, generator=generator).to(t.device) < t[:, None]


def masked_loss(ce: torch.Tensor, t: torch.Tensor, corruptible: int, elbo: bool) -> torch.Tensor:
    """Cross-entropies ``ce`` [M] at the masked positions, ``t`` [M] their examples' times -> the loss: their mean,
    or with ``elbo`` ``sum(ce / t) / corruptible`` (``corruptible``: the positions that could have been masked).
    0 (with a gradient path) when nothing is masked."""
    if elbo:
        return (ce / t).sum() / max(corruptible, 1)
    return ce.sum() / max(ce.numel(), 1)
