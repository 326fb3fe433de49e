"""The judge classifier learns, is deterministic given its seed, and is cached by content hash."""

import pytest
import torch

import unimm.eval.classifier as classifier
from unimm.data import load_split
from unimm.eval.cache import cache_path
from unimm.eval.classifier import ImageClassifier, accuracy, load_or_train_classifier, train_classifier


@pytest.fixture(scope="module")
def digits_train(digits_dir):
    return load_split(digits_dir, "train")


def test_classifier_beats_chance_by_far(digits_train):
    clf = train_classifier(digits_train, steps=150, batch_size=64)
    assert accuracy(clf, digits_train.images, digits_train.labels) > 0.8  # chance is 0.1


@pytest.mark.parametrize("size", [8, 16, 28, 64])
def test_classifier_shapes(size):
    clf = ImageClassifier(3, size, 7)
    assert clf(torch.zeros(2, 3, size, size)).shape == (2, 7)
    with pytest.raises(ValueError, match="expects"):
        clf(torch.zeros(2, 1, size, size))


def test_training_is_deterministic_given_seed(digits_train):
    a, b = (train_classifier(digits_train, steps=15, batch_size=32, seed=3) for _ in range(2))
    c = train_classifier(digits_train, steps=15, batch_size=32, seed=4)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_cache_hit_loads_identical_weights_without_training(digits_dir, tmp_path, monkeypatch):
    clf, acc = load_or_train_classifier(digits_dir, cache_dir=tmp_path, steps=20)
    assert len(list(tmp_path.glob("classifier-*.safetensors"))) == 1
    assert 0.0 <= acc <= 1.0

    def no_training(*args, **kwargs):
        raise AssertionError("retrained despite a cache hit")

    monkeypatch.setattr(classifier, "train_classifier", no_training)
    again, acc_again = load_or_train_classifier(digits_dir, cache_dir=tmp_path, steps=20)
    assert acc_again == acc
    for key, value in clf.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    with pytest.raises(AssertionError, match="retrained"):  # other settings: a different key
        load_or_train_classifier(digits_dir, cache_dir=tmp_path, steps=21)


def test_the_feature_network_has_a_64_wide_bottleneck_and_a_cache_key_apart_from_the_judge(digits_dir, tmp_path):
    """FID's feature space is a 64-d bottleneck (1,000 images per set estimate its covariance) of a classifier
    trained apart; the judge keeps its 512-d head and the cache key it had before bottlenecks existed, so prompt
    accuracies stay comparable with earlier reports."""
    assert ImageClassifier(1, 8, 10).feature_dim == 512
    clf = ImageClassifier(1, 8, 10, bottleneck=classifier.FEATURE_DIM)
    assert classifier.FEATURE_DIM == 64 and clf.feature_dim == 64
    assert clf.features(torch.zeros(2, 1, 8, 8)).shape == (2, 64) and clf(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    judge, _ = load_or_train_classifier(digits_dir, cache_dir=tmp_path, steps=5)
    assert judge.feature_dim == 512 and classifier.ARCH_VERSION == 1
    key = dict(split="train", image_size=None, channels=None, eval_split="test", steps=5, batch_size=128, seed=0,
               arch=1)  # fmt: skip
    assert cache_path("classifier", digits_dir, key, tmp_path).is_file()  # the key of judges cached before
    new, _ = load_or_train_classifier(digits_dir, cache_dir=tmp_path, steps=5, bottleneck=classifier.FEATURE_DIM)
    assert new.feature_dim == 64 and len(list(tmp_path.glob("classifier-*.safetensors"))) == 2
    again, _ = load_or_train_classifier(digits_dir, cache_dir=tmp_path, steps=5, bottleneck=classifier.FEATURE_DIM)
    images = load_split(digits_dir, "test").images
    assert again.feature_dim == 64 and torch.equal(again.features(images), new.features(images))
