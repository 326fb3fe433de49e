"""The harness's caption, VQA and generated-image accuracy, measured on fake models whose answers we know."""

import random

import pytest
import torch

from unimm.data import load_split, templates_for
from unimm.eval.classifier import accuracy, train_classifier
from unimm.eval.harness import Suite, class_prompts, generation, understanding


@pytest.fixture(scope="module")
def data(digits_dir):
    return load_split(digits_dir, "train")


@pytest.fixture(scope="module")
def templates(data):
    return templates_for(data)


class FakeCaptioner:
    """Looks each image up in ``data`` and names its class, or talks nonsense."""

    def __init__(self, data, garbage: bool = False) -> None:
        self.data, self.garbage, self.questions = data, garbage, []

    def caption(self, images, question=None):
        self.questions.append(question)
        flat = self.data.images.flatten(1)
        idx = [int((flat == img.flatten()).all(1).nonzero()[0]) for img in images]
        if self.garbage:
            return ["a blurry squiggle" for _ in idx]
        return [f"a handwritten {self.data.class_names[int(self.data.labels[i])]}" for i in idx]


class FakeGenerator:
    """Returns real images of the class named in each prompt, in dataset order per class."""

    def __init__(self, data, templates) -> None:
        self.data, self.templates = data, templates
        self.next = [0] * templates.num_classes
        self.returned: list[torch.Tensor] = []

    def generate(self, prompts, cfg_scale=None, steps=None, sampler=None, generator=None):
        out = []
        for p in prompts:
            label = self.templates.parse(p)
            pool = torch.nonzero(self.data.labels == label).flatten()
            out.append(self.data.images[pool[self.next[label] % len(pool)]])
            self.next[label] += 1
        self.returned.append(torch.stack(out))
        return self.returned[-1]


def _suite(n: int, batch_size: int = 100, per_class: int = 1) -> Suite:
    return Suite("test", understand_n=n, per_class=per_class, prompts_n=n, batch_size=batch_size)


def test_true_captions_score_one(data, templates):
    res = understanding(FakeCaptioner(data), data, _suite(60, batch_size=25))
    assert res["caption_accuracy"] == 1.0 and res["n"] == 60 and res["unparsed"] == 0
    assert res["vqa_accuracy"] == 1.0 and res["vqa_n"] == 60 and res["vqa_unparsed"] == 0
    label = int(data.labels[0])
    assert res["examples"][0] == {
        "index": 0, "caption": f"a handwritten {data.class_names[label]}", "caption_class": label, "label": label,
        "answer": f"a handwritten {data.class_names[label]}", "answer_class": label,
    }  # fmt: skip


def test_garbage_captions_score_zero(data, templates):
    res = understanding(FakeCaptioner(data, garbage=True), data, _suite(30))
    assert res["caption_accuracy"] == 0.0 and res["unparsed"] == 30
    assert res["vqa_accuracy"] == 0.0 and res["vqa_unparsed"] == 30


def test_vqa_asks_one_fixed_question(data, templates):
    fake = FakeCaptioner(data)
    res = understanding(fake, data, _suite(20, batch_size=10))
    question = templates.vqa(0, random.Random(0))[0]
    assert res["vqa_question"] == question == "which digit is in the image?"
    assert [q for q in fake.questions if q is not None] == [question] * 2  # two batches of 10


def test_prompts_cover_every_template_in_blocks(templates):
    prompts = class_prompts(templates, 7, 14)
    assert set(prompts) == set(templates.all_captions(7))
    assert prompts[0] == prompts[1] == templates.all_captions(7)[0]
    assert all(templates.parse(p) == 7 for p in prompts)


def test_real_images_as_generations_score_the_classifier_accuracy(data, templates):
    clf = train_classifier(data, steps=60, batch_size=64)
    res, images, prompts = generation(FakeGenerator(data, templates), data, _suite(0, 16, 5), 0, clf, None, None)
    labels = torch.arange(10).repeat_interleave(5)  # class-major: 5 prompts for class 0, then class 1, ...
    assert [templates.parse(p) for p in prompts] == labels.tolist()
    assert res["prompt_accuracy"] == pytest.approx(accuracy(clf, images, labels))
    assert res["prompt_accuracy"] >= 0.5  # a trained classifier on images of the prompted class
    assert res["n"] == res["prompt_accuracy_n"] == 50 and len(res["prompt_accuracy_per_class"]) == 10
    assert sum(res["prompt_accuracy_per_class"]) / 10 == pytest.approx(res["prompt_accuracy"])
    assert "fid" not in res and "clip_score" not in res  # no feature extractor, no CLIP
    assert torch.equal(images[10], data.images[torch.nonzero(data.labels == 2).flatten()[0]])
