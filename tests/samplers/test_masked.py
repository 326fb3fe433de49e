"""MaskGIT schedule, training masks and the iterative parallel decoder."""

import math

import torch

from unimm.samplers.masked import cosine_mask_ratio, maskgit_sample, sample_mask


def test_cosine_schedule_endpoints_and_monotone():
    r = torch.linspace(0, 1, 11)
    g = cosine_mask_ratio(r)
    assert g[0] == 1 and abs(float(g[-1])) < 1e-6 and (g[1:] <= g[:-1]).all()


def test_training_masks_follow_the_schedule_and_never_are_empty():
    masks = sample_mask(4000, 49, torch.Generator().manual_seed(0))
    counts = masks.sum(1).float()
    assert counts.min() >= 1 and counts.max() <= 49
    # E[cos(pi u / 2)] = 2 / pi for u ~ U(0, 1)
    assert abs(float(counts.mean()) / 49 - 2 / math.pi) < 0.02


def test_oracle_model_is_recovered_and_unmasking_follows_the_schedule():
    target = torch.randint(0, 10, (3, 16), generator=torch.Generator().manual_seed(1))
    masked_counts = []

    def oracle(tokens: torch.Tensor) -> torch.Tensor:
        masked_counts.append(int((tokens == 10).sum(1)[0]))
        return torch.nn.functional.one_hot(target, 10).float() * 20

    out = maskgit_sample(oracle, 3, 16, mask_id=10, steps=4, temperature=0, choice_temperature=0)
    assert torch.equal(out, target)
    expected = [16] + [math.floor(float(cosine_mask_ratio((s + 1) / 4)) * 16) for s in range(3)]
    assert masked_counts == expected


def test_confident_tokens_are_kept_first():
    conf = torch.linspace(1, 5, 8)  # the last positions are the most confident

    def fn(tokens: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(1, 8, 4)
        logits[0, :, 2] = conf
        return logits

    seen = []

    def spy(tokens):
        seen.append(tokens.clone())
        return fn(tokens)

    maskgit_sample(spy, 1, 8, mask_id=4, steps=3, temperature=0, choice_temperature=0)
    kept_after_first = seen[1][0] != 4
    assert kept_after_first[-1] and not kept_after_first[0]
