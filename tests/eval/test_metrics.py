"""Caption, VQA and generated-image accuracy, measured on fake models whose answers we know."""

import pytest
import torch

from unimm.data import load_split, templates_for
from unimm.eval.classifier import accuracy, train_classifier
from unimm.eval.generation import class_prompts, generated_accuracy
from unimm.eval.understanding import caption_accuracy, vqa_accuracy


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


def test_true_captions_score_one(data, templates):
    res = caption_accuracy(FakeCaptioner(data), data, templates, n=60, batch_size=25)
    assert res["caption_accuracy"] == 1.0 and res["n"] == 60 and res["unparsed"] == 0
    assert res["examples"][0] == {
        "index": 0, "label": int(data.labels[0]), "text": res["examples"][0]["text"], "parsed": int(data.labels[0])
    }  # fmt: skip


def test_garbage_captions_score_zero(data, templates):
    res = caption_accuracy(FakeCaptioner(data, garbage=True), data, templates, n=30)
    assert res["caption_accuracy"] == 0.0 and res["unparsed"] == 30


def test_vqa_asks_the_question(data, templates):
    fake = FakeCaptioner(data)
    res = vqa_accuracy(fake, data, templates, n=20, batch_size=10)
    assert res["vqa_accuracy"] == 1.0 and res["question"] == "what digit is this?"
    assert fake.questions == ["what digit is this?"] * 2
    assert vqa_accuracy(FakeCaptioner(data, garbage=True), data, templates, n=20)["vqa_accuracy"] == 0.0


def test_prompts_cover_every_template_in_blocks(templates):
    prompts = class_prompts(templates, 7, 14)
    assert set(prompts) == set(templates.all_captions(7))
    assert prompts[0] == prompts[1] == templates.all_captions(7)[0]
    assert all(templates.parse(p) == 7 for p in prompts)


def test_real_images_as_generations_score_the_classifier_accuracy(data, templates):
    clf = train_classifier(data, steps=60, batch_size=64)
    fake = FakeGenerator(data, templates)
    res = generated_accuracy(fake, clf, data.class_names, templates, per_class=5, batch_size=16, grid_per_class=3)
    shown = torch.cat(fake.returned)
    labels = torch.arange(10).repeat_interleave(5)
    assert res["generated_accuracy"] == pytest.approx(accuracy(clf, shown, labels))
    assert res["generated_accuracy"] >= 0.5  # a trained classifier on images of the prompted class
    assert res["n"] == 50 and len(res["per_class_accuracy"]) == 10
    assert sum(map(sum, res["confusion"])) == 50
    assert res["grid_images"].shape == (10, 3, 1, 8, 8)
    assert torch.equal(res["grid_images"][2, 0], shown[10])
    assert all(templates.parse(p) == c for c, row in enumerate(res["grid_prompts"]) for p in row)
