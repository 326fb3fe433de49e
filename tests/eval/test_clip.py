"""The in-project CLIP: learns above chance, scores matching captions higher, loads from its cache."""

import math
import random

import pytest
import torch

import unimm.eval.clip as clip
from unimm.data import load_split, templates_for
from unimm.eval.clip import clip_score, contrastive_loss, load_or_train_clip, retrieval_accuracy, train_clip

SETTINGS = dict(steps=80, batch_size=64, dim=32, seed=0)


@pytest.fixture(scope="module")
def trained(digits_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("clip-cache")
    model, acc = load_or_train_clip(digits_dir, cache_dir=cache, **SETTINGS)
    return model, acc, cache


def test_tiny_training_beats_chance_retrieval(trained):
    _, acc, _ = trained
    assert acc > 0.5  # 10 classes: chance is 0.1


def test_clip_score_prefers_matching_captions(trained, digits_dir):
    model = trained[0]
    data = load_split(digits_dir, "test")
    templates, rng = templates_for(data), random.Random(0)
    captions = [templates.caption(int(y), rng) for y in data.labels]
    wrong = [templates.caption((int(y) + 1) % 10, rng) for y in data.labels]
    matching = clip_score(model, data.images, captions)
    assert 0 <= clip_score(model, data.images, wrong) < matching <= 100


def test_cache_hit_loads_same_weights_without_training(trained, digits_dir, monkeypatch):
    model, acc, cache = trained

    def no_training(*args, **kwargs):
        raise AssertionError("cache hit should not retrain")

    monkeypatch.setattr(clip, "train_clip", no_training)
    loaded, loaded_acc = load_or_train_clip(digits_dir, cache_dir=cache, **SETTINGS)
    assert loaded_acc == acc and loaded.vocab.tokens == model.vocab.tokens
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_class_names_train_an_evaluator_of_their_own(digits_dir, tmp_path):
    french = ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"]
    model, _ = load_or_train_clip(digits_dir, cache_dir=tmp_path, steps=2, dim=8, class_names=french)
    assert "sept" in model.vocab.tokens and "seven" not in model.vocab.tokens
    load_or_train_clip(digits_dir, cache_dir=tmp_path, steps=2, dim=8)
    assert len(list(tmp_path.glob("clip-*.safetensors"))) == 2  # the names are part of the cache key


def test_contrastive_loss_treats_same_group_as_positives():
    split = torch.tensor([[5.0, 5.0, -5.0], [5.0, 5.0, -5.0], [-5.0, -5.0, 5.0]])  # images 0, 1 match texts 0, 1
    diagonal = 10 * torch.eye(3) - 5
    same_class, all_distinct = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2])
    # rows 0 and 1 spread their target over two columns: the best possible loss is their entropy, 2 ln 2 / 3
    assert contrastive_loss(split, same_class) == pytest.approx(2 * math.log(2) / 3, abs=1e-3)
    assert contrastive_loss(split, same_class) < contrastive_loss(diagonal, same_class)
    assert contrastive_loss(diagonal, all_distinct) < contrastive_loss(split, all_distinct)


def test_free_captions_train_and_retrieve_within_batches(digits_dir):
    def captioned(split):
        data = load_split(digits_dir, split)
        data.captions = [f"a sketch of {data.class_names[int(y)]}" for y in data.labels]
        return data

    model = train_clip(captioned("train"), steps=80, batch_size=64, dim=32)
    assert retrieval_accuracy(model, captioned("test"), batch_size=25) > 0.4  # about 0.1 by chance
