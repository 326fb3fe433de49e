"""The harness's caption, VQA and generated-image accuracy, measured on fake models whose answers we know."""

import math
import random

import pytest
import torch

from unimm.data import load_split, templates_for
from unimm.eval.classifier import FEATURE_DIM, accuracy, train_classifier
from unimm.eval.distribution import FeatureExtractor
from unimm.eval.harness import Suite, class_prompts, generation, understanding
from unimm.eval.ranking import class_scores
from unimm.eval.report import eval_document, generation_rows, understanding_rows


@pytest.fixture(scope="module")
def data(digits_dir):
    return load_split(digits_dir, "train")


@pytest.fixture(scope="module")
def templates(data):
    return templates_for(data)


class FakeCaptioner:
    """Looks each image up in ``data`` and names its class, or talks nonsense; scores the texts that name the
    image's class at -0.5 nats per token and every other text at -3 (or cannot score texts at all)."""

    def __init__(self, data, garbage: bool = False, scores: bool = True) -> None:
        self.data, self.garbage, self.scores, self.questions = data, garbage, scores, []
        self.templates = templates_for(data)

    def labels(self, images) -> list[int]:
        flat = self.data.images.flatten(1)
        return [int(self.data.labels[int((flat == img.flatten()).all(1).nonzero()[0])]) for img in images]

    def caption(self, images, question=None):
        self.questions.append(question)
        if self.garbage:
            return ["a blurry squiggle" for _ in images]
        return [f"a handwritten {self.data.class_names[y]}" for y in self.labels(images)]

    def text_token_counts(self, texts):
        return [len(t.split()) + 1 for t in texts]

    def score_texts(self, images, texts, question=None, generator=None):
        if not self.scores:
            raise NotImplementedError("this objective has no likelihood")
        named = torch.tensor([self.templates.parse(t) for t in texts])
        per_token = torch.where(named[None] == torch.tensor(self.labels(images))[:, None], -0.5, -3.0)
        return per_token * torch.tensor(self.text_token_counts(texts), dtype=torch.float)


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
    assert res["rank_accuracy"] == 1.0 and res["rank_n"] == 60 and res["caption_nll"] == pytest.approx(0.5)
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
    assert res["rank_accuracy"] == 1.0 and res["rank_n"] == 30  # it still tells the classes apart


def test_a_model_that_cannot_score_texts_gets_none_and_the_reason(data):
    res = understanding(FakeCaptioner(data, scores=False), data, _suite(20))
    assert res["rank_accuracy"] is None and res["caption_nll"] is None
    assert res["rank_note"] == "this objective has no likelihood" and res["caption_accuracy"] == 1.0


def test_ranking_can_be_switched_off(data):
    res = understanding(FakeCaptioner(data, scores=False), data, Suite(**{**_suite(20).__dict__, "rank": False}))
    assert not {"rank_accuracy", "caption_nll", "rank_n", "rank_note"} & set(res)


def test_a_class_scores_the_log_of_the_mean_probability_of_its_captions():
    """One very likely caption outweighs a consistently mediocre class (the mean of log-probabilities would
    pick class 1)."""
    scores = torch.tensor([[-1.0, -10.0, -3.0, -3.0]])
    per_class = class_scores(scores, [[0, 1], [2, 3]])
    assert float(per_class[0, 0]) == pytest.approx(math.log((math.exp(-1) + math.exp(-10)) / 2))
    assert float(per_class[0, 1]) == pytest.approx(-3.0) and int(per_class.argmax()) == 0


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


def test_generation_scores_the_distribution_on_one_feature_pass_with_intervals(data, templates):
    """Real digits as the generations (10 per class, 100 images) against the 200 real ones: every distribution
    metric with its bootstrap interval, FID too (100 > 64 features); the report shows value [lo, hi]."""
    clf = train_classifier(data, steps=60, batch_size=64, bottleneck=FEATURE_DIM)  # the feature network
    suite = Suite(**{**_suite(0, 50, 10).__dict__, "bootstrap_reps": 50})
    res, images, _ = generation(FakeGenerator(data, templates), data, suite, 0, clf, None, FeatureExtractor(clf))
    assert (res["n"], res["n_generated"], res["n_real"], res["feature_dim"]) == (100, 100, 200, 64)
    for metric, key in (
        ("fid", "fid_ci"),
        ("kid_mean", "kid_ci"),
        ("precision", "precision_ci"),
        ("recall", "recall_ci"),
    ):
        assert res[key][0] <= res[metric] <= res[key][1], metric
    assert res["precision"] == 1.0 and res["bootstrap"]["reps"] == 50  # every generation is a real training digit
    assert "fid_note" not in res and "100 generated and 200 real" in res["distribution_note"]
    fid = next(row for row in generation_rows(res) if row[0] == "fid")
    assert fid == ["fid", f"{res['fid']:.4g} [{res['fid_ci'][0]:.4g}, {res['fid_ci'][1]:.4g}]", "100 / 200"]


def test_the_report_lists_the_rank_metrics_and_says_why_they_are_missing(tmp_path):
    u = {"n": 4, "samples_per_s": 1.0, "latency_s": 0.1, "examples": [], "caption_accuracy": 0.5,
         "rank_accuracy": None, "caption_nll": None, "rank_n": 4, "rank_note": "no likelihood"}  # fmt: skip
    rows = understanding_rows(u)
    assert rows == [["caption_accuracy", "0.5", "4"], ["rank_accuracy", "–", "4"], ["caption_nll", "–", "4"]]
    result = {
        "suite": {"name": "t"}, "seed": 0, "dataset": {"path": "d", "test_images": 4}, "understanding": u,
        "generation": {"samples_per_s": 1.0, "latency_s": 0.1},
        "cost": {"training": {}, "params": {"total": 1, "active": 1, "trainable": 1}, "peak_memory_mib": 1.0},
        "evaluators": {"classifier_test_accuracy": None, "clip_test_retrieval_accuracy": None, "fid_features": None},
    }  # fmt: skip
    assert "No rank accuracy or caption NLL: no likelihood" in eval_document(result, "t", tmp_path).markdown(tmp_path)
