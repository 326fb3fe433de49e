"""FID, KID and precision/recall on judge-classifier features: zero for a set against itself, growing with noise."""

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from unimm.data import load_split
from unimm.eval.classifier import train_classifier
from unimm.eval.distribution import (
    FeatureExtractor,
    extract_features,
    fid_kid,
    inception_extractor,
    precision_recall,
    to_unit_range,
)


@pytest.fixture(scope="module")
def images(digits_dir):
    return load_split(digits_dir, "train").images


@pytest.fixture(scope="module")
def extractor(digits_dir):
    return FeatureExtractor(train_classifier(load_split(digits_dir, "train"), steps=20, batch_size=64))


def noisy(images, strength, seed=0):
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images + strength * noise).clamp(-1, 1)


def test_fid_kid_of_a_set_with_itself_is_zero(images, extractor):
    out = fid_kid(images, images, extractor, kid_subset_size=50)
    assert abs(out["fid"]) < 1e-3
    assert abs(out["kid_mean"]) < 0.01
    assert out["n_real"] == out["n_fake"] == len(images)


def test_fid_kid_grow_with_noise(images, extractor):
    scores = [fid_kid(images, noisy(images, s), extractor, kid_subset_size=100) for s in (0.0, 0.3, 0.7, 1.5)]
    fids, kids = [s["fid"] for s in scores], [s["kid_mean"] for s in scores]
    assert fids == sorted(fids) and fids[-1] > fids[1] > 1e-3
    assert kids == sorted(kids) and kids[-1] > 0


def test_feature_extractor_plugs_into_torchmetrics(images, extractor):
    fake = noisy(images, 0.5)
    metric = FrechetInceptionDistance(feature=extractor, normalize=True)
    metric.update(to_unit_range(images), real=True)
    metric.update(to_unit_range(fake), real=False)
    assert float(metric.compute()) == pytest.approx(fid_kid(images, fake, extractor, kid_subsets=2)["fid"], rel=1e-3)


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
