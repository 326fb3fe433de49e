"""FID, KID and precision/recall on judge-classifier features: zero for a set against itself, growing with noise,
equal to torchmetrics', refused on too few images, and bootstrap intervals that hold the estimate and narrow."""

import warnings

import pytest
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from unimm.data import load_split
from unimm.eval.classifier import FEATURE_DIM, train_classifier
from unimm.eval.distribution import (
    FeatureExtractor,
    _Resampler,
    distribution_metrics,
    extract_features,
    fid_kid,
    frechet_distance,
    inception_extractor,
    kernel_distance,
    precision_recall,
    to_unit_range,
)

CI_KEYS = {"fid": "fid_ci", "kid_mean": "kid_ci", "precision": "precision_ci", "recall": "recall_ci"}


@pytest.fixture(scope="module")
def images(digits_dir):
    return load_split(digits_dir, "train").images


@pytest.fixture(scope="module")
def extractor(digits_dir):
    data = load_split(digits_dir, "train")  # FID's feature network: the judge's with the 64-d bottleneck
    return FeatureExtractor(train_classifier(data, steps=20, batch_size=64, bottleneck=FEATURE_DIM))


def noisy(images, strength, seed=0):
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images + strength * noise).clamp(-1, 1)


def gaussians(n: int, shift: float, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of N(0, I) and ``n`` of N(shift, I) in ``dim`` dimensions."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=gen), torch.randn(n, dim, generator=gen) + shift


class _Passthrough(nn.Module):
    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_fid_kid_of_a_set_with_itself_is_zero(images, extractor):
    out = fid_kid(images, images, extractor)
    assert abs(out["fid"]) < 1e-3
    assert out["kid_mean"] <= 0  # the unbiased estimate of a zero MMD: at or just under zero
    assert out["n_real"] == out["n_fake"] == len(images) and out["feature_dim"] == 64


def test_fid_kid_grow_with_noise(images, extractor):
    scores = [fid_kid(images, noisy(images, s), extractor) for s in (0.0, 0.3, 0.7, 1.5)]
    fids, kids = [s["fid"] for s in scores], [s["kid_mean"] for s in scores]
    assert fids == sorted(fids) and fids[-1] > fids[1] > 1e-3
    assert kids == sorted(kids) and kids[-1] > 0


def test_own_fid_and_kid_equal_torchmetrics_on_the_same_features(images, extractor):
    real, fake = extract_features(extractor, images).double(), extract_features(extractor, noisy(images, 0.5)).double()
    fid = FrechetInceptionDistance(feature=_Passthrough(real.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features"
        kid = KernelInceptionDistance(feature=_Passthrough(real.shape[1]), subsets=2, subset_size=len(real))
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    assert frechet_distance(real, fake) == pytest.approx(float(fid.compute()), rel=1e-3)
    assert kernel_distance(real, fake) == pytest.approx(float(kid.compute()[0]), rel=1e-6)  # subsets = whole sets


def test_fid_is_refused_unless_each_set_has_more_images_than_features():
    real, fake = gaussians(80, 0.5, dim=64)
    with pytest.raises(ValueError, match="more images than feature dimensions"):
        frechet_distance(real[:64], fake)
    out = distribution_metrics(real, fake[:64], reps=10)
    assert out["fid"] is None and out["fid_ci"] is None and "singular" in out["fid_note"]
    assert out["n_generated"] == 64 and out["n_real"] == 80 and out["feature_dim"] == 64
    assert out["precision_ci"] is not None and out["kid_ci"] is not None  # the other metrics need no covariance
    assert distribution_metrics(real, fake[:65], reps=10)["fid"] > 0


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_samples():
    small, large = (distribution_metrics(*gaussians(n, 0.3), reps=100, seed=1) for n in (100, 800))
    for metric, key in CI_KEYS.items():
        for out in (small, large):
            lo, hi = out[key]
            assert lo <= out[metric] <= hi, (metric, out[metric], out[key])
        assert large[key][1] - large[key][0] < 0.7 * (small[key][1] - small[key][0]), metric
    assert distribution_metrics(*gaussians(100, 0.3), reps=100, seed=1) == small  # seeded: the same twice
    assert small["bootstrap"] == {
        "reps": 100,
        "seed": 1,
        "level": 0.95,
        "interval": "percentile, median-bias corrected",
    }


def test_resampled_metrics_are_the_metrics_of_the_resampled_sets():
    """Counts stand for copies: FID, precision and recall with counts equal those of the sets with the points
    repeated (KID leaves the pairs of copies out, like the unbiased estimator's i = j), and all-one counts give
    the plain metrics."""
    real, fake = gaussians(90, 0.5, dim=4)
    metrics = _Resampler(real, fake, k=3)
    point = metrics(torch.ones(90), torch.ones(90))
    assert point["fid"] == pytest.approx(frechet_distance(real, fake), rel=1e-9)
    assert point["kid_mean"] == pytest.approx(kernel_distance(real, fake), rel=1e-9)
    assert {k: point[k] for k in ("precision", "recall")} == {
        k: v for k, v in precision_recall(real, fake).items() if k != "k"
    }
    gen = torch.Generator().manual_seed(0)
    w, v = (torch.bincount(torch.randint(90, (90,), generator=gen), minlength=90) for _ in range(2))
    copies = real.repeat_interleave(w, dim=0), fake.repeat_interleave(v, dim=0)
    resampled = metrics(w, v)
    assert resampled["fid"] == pytest.approx(frechet_distance(*copies), rel=1e-9)
    pr = precision_recall(*copies)
    assert (resampled["precision"], resampled["recall"]) == pytest.approx((pr["precision"], pr["recall"]))


def test_feature_extractor_plugs_into_torchmetrics(images, extractor):
    fake = noisy(images, 0.5)
    metric = FrechetInceptionDistance(feature=extractor, normalize=True)
    metric.update(to_unit_range(images), real=True)
    metric.update(to_unit_range(fake), real=False)
    assert float(metric.compute()) == pytest.approx(fid_kid(images, fake, extractor)["fid"], rel=1e-3)


def test_precision_recall_identical_and_disjoint_sets(images, extractor):
    feats = extract_features(extractor, images)
    same = precision_recall(feats, feats, k=3)
    assert same["precision"] == same["recall"] == 1.0
    far = feats + 10 * feats.std() * torch.ones_like(feats)
    shifted = precision_recall(feats, far, k=3)
    assert shifted["precision"] < 0.1 and shifted["recall"] < 0.1


def test_inception_path_names_the_missing_piece(tmp_path):
    with pytest.raises((ModuleNotFoundError, FileNotFoundError), match="torch-fidelity|weights not found"):
        inception_extractor(tmp_path / "missing.pth")
