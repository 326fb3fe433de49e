"""The evaluation harness: deterministic given a seed, right on known cases, CLI writes its files."""

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_overrides
from unimm.cli import app
from unimm.config import load_config
from unimm.data import load_split, templates_for
from unimm.eval.classifier import load_or_train_classifier
from unimm.eval.cost import parameter_counts
from unimm.eval.harness import SUITES, Suite, evaluate, generation_jobs, understanding
from unimm.eval.suites import MIN_DISTRIBUTION_SAMPLES
from unimm.models import UnifiedModel
from unimm.train import train

TINY = Suite("tiny", understand_n=12, per_class=2, prompts_n=12, batch_size=8, classifier_steps=60, clip_steps=40)


@pytest.fixture(scope="module")
def run_dir(digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "quick"
    return train(load_config(None, tiny_overrides(digits_dir, **{"train.steps": 6})), out, progress=False)


def _numbers(result: dict) -> dict:
    """Everything but the timings and the memory peak (which vary between identical calls)."""
    drop = {"samples_per_s", "latency_s", "peak_memory_mib", "rank_samples_per_s", "heldout_samples_per_s"}

    def walk(x):
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items() if k not in drop and not k.startswith("_")}
        return x

    return walk(result)


def test_same_seed_gives_the_same_numbers_twice(run_dir, tmp_path):
    model = UnifiedModel.from_pretrained(run_dir)
    a = evaluate(model, TINY, seed=3, cache_dir=tmp_path, run_dir=run_dir)
    b = evaluate(model, TINY, seed=3, cache_dir=tmp_path, run_dir=run_dir)
    assert _numbers(a) == _numbers(b)
    torch.testing.assert_close(a["_images"], b["_images"])
    u, g = a["understanding"], a["generation"]
    assert u["n"] == 12 and u["vqa_n"] == 12 and 0 <= u["caption_accuracy"] <= 1 and "caption_bleu_4" in u
    assert (
        u["rank_n"] == 12 and 0 <= u["rank_accuracy"] <= 1 and 0 < u["caption_nll"] < 10 and u["rank_samples_per_s"] > 0
    )
    assert g["n"] == 20 and g["seed"] == 3 and {"fid", "kid_mean", "precision", "recall", "clip_score"} <= set(g)
    assert a["cost"]["training"]["train_flops"] > 0 and a["cost"]["params"]["total"] > 0
    assert 0 < a["evaluators"]["classifier_test_accuracy"] <= 1


def test_suites_with_distribution_metrics_generate_at_least_1000_images(digits_dir):
    """FID / KID / precision-recall see >= 1,000 generated images in every suite that has them (10 classes or
    free captions), the atlas's above all; the same images serve prompt accuracy."""
    test = load_split(digits_dir, "test", 8, 1)  # 10 classes with caption templates
    assert MIN_DISTRIBUTION_SAMPLES == 1000 and SUITES["atlas"].distribution
    assert len(generation_jobs(test, SUITES["atlas"])) >= 1000
    for suite in SUITES.values():
        if suite.distribution:
            assert len(generation_jobs(test, suite)) >= 1000 and suite.prompts_n >= 1000, suite.name


def test_rank_accuracy_does_not_read_the_captions(run_dir, digits_dir, monkeypatch):
    """A tiny model trained a few steps: its rank accuracy and caption NLL stay the same when its captions are
    replaced by text naming no class (caption accuracy 0), and do not depend on the batch size."""
    model = UnifiedModel.from_pretrained(run_dir)
    test = load_split(digits_dir, "test", 8, 1)
    real = understanding(model, test, TINY)
    monkeypatch.setattr(model, "caption", lambda images, question=None: ["zzz"] * len(images))
    garbage = understanding(model, test, Suite(**{**TINY.__dict__, "batch_size": 5}))
    assert garbage["caption_accuracy"] == 0 and garbage["unparsed"] == 12 and garbage["rank_n"] == 12
    assert garbage["rank_accuracy"] == real["rank_accuracy"]
    assert garbage["caption_nll"] == pytest.approx(real["caption_nll"], rel=1e-5)


def test_heldout_image_loss_is_written_and_does_not_depend_on_the_batch_size(run_dir, digits_dir, tmp_path):
    """eval.json's generation section holds the writer's held-out loss of the understood test images after their class
    prompts (in a suite that ranks nothing too), eval.md shows it, and the batch size does not change it."""
    from unimm.eval.harness import heldout_image_loss, heldout_prompts
    from unimm.eval.report import write_eval
    from unimm.eval.suites import SUITES

    model = UnifiedModel.from_pretrained(run_dir)
    suite = Suite(**{**TINY.__dict__, "rank": False, "distribution": False})
    write_eval(evaluate(model, suite, seed=3, cache_dir=tmp_path, run_dir=run_dir), tmp_path / "eval", "tiny")
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    g = saved["generation"]
    assert g["heldout_image_loss_n"] == 12 and g["heldout_image_loss"] > 0 and "rank_n" not in saved["understanding"]
    test = load_split(digits_dir, "test", 8, 1)
    idx, prompts = heldout_prompts(test, 12)
    assert idx == list(range(12)) and [templates_for(test).parse(p) for p in prompts] == test.labels[:12].tolist()
    expected = model.image_loss(test.images[:12], prompts, generator=torch.Generator().manual_seed(3)).mean()
    assert g["heldout_image_loss"] == pytest.approx(float(expected), rel=1e-5)
    other = heldout_image_loss(model, test, Suite(**{**suite.__dict__, "batch_size": 5}), seed=3)
    assert other["heldout_image_loss"] == pytest.approx(g["heldout_image_loss"], rel=1e-5)
    md = (tmp_path / "eval" / "eval.md").read_text()
    assert "| heldout_image_loss |" in md and "held-out image loss: samples/s" in md
    assert SUITES["atlas"].heldout and not SUITES["demo"].heldout  # the demo's 1,000 images: turned off


class _PerfectGenerator(torch.nn.Module):
    """Answers every prompt with a real image of the prompted class that the judge classifies right."""

    def __init__(self, model, data, clf):
        super().__init__()
        self.cfg, self.inner = model.cfg, model
        right = clf.predict(data.images) == data.labels
        self.pool = {int(k): data.images[(data.labels == k) & right] for k in data.labels.unique()}
        self.templates = templates_for(data)

    def caption(self, images, question=None):
        return self.inner.caption(images, question=question)

    def score_texts(self, images, texts, question=None, generator=None):
        return self.inner.score_texts(images, texts, question, generator)

    def text_token_counts(self, texts):
        return self.inner.text_token_counts(texts)

    def image_loss(self, images, prompts, generator=None):
        return self.inner.image_loss(images, prompts, generator)

    def generate(self, prompts, generator=None, **kw):
        return torch.stack([self.pool[self.templates.parse(p)][i % 2] for i, p in enumerate(prompts)])


def test_a_perfect_generator_scores_100_percent(run_dir, digits_dir, tmp_path):
    model = UnifiedModel.from_pretrained(run_dir)
    suite = Suite(**{**TINY.__dict__, "classifier_steps": 300})
    train_split = load_split(digits_dir, "train", 8, 1)
    clf, _ = load_or_train_classifier(digits_dir, "train", 8, 1, tmp_path / "classifiers", steps=300)
    result = evaluate(_PerfectGenerator(model, train_split, clf), suite, cache_dir=tmp_path)
    assert result["generation"]["prompt_accuracy"] == 1.0
    assert len(generation_jobs(load_split(digits_dir, "test", 8, 1), TINY)) == 20


def test_active_parameters_count_top_k_experts(digits_dir):
    from unimm.tokenizers.text import TextTokenizer

    sets = {"layers": '{kind = "moe", experts = 4, top_k = 1}', "data.image_size": 8, "data.channels": 1}
    model = UnifiedModel(load_config(None, tiny_overrides(digits_dir, **sets)), TextTokenizer.train(["a b"], 300))
    counts = parameter_counts(model)
    experts = sum(b.mlp.w_gate_up.numel() + b.mlp.w_down.numel() for b in model.backbone.layers)
    assert counts["total"] - counts["active"] == experts * 3 // 4


def test_cli_writes_json_markdown_and_sample_grids(run_dir, tmp_path, monkeypatch):
    import unimm.eval.harness as harness

    monkeypatch.setitem(harness.SUITES, "quick", TINY)
    monkeypatch.setenv("UNIMM_CACHE", str(tmp_path / "cache"))
    res = CliRunner().invoke(app, ["eval", str(run_dir), "--out", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert data["suite"]["name"] == "tiny" and "_images" not in data
    md = (tmp_path / "eval" / "eval.md").read_text()
    assert "## Generation" in md and "| rank_accuracy |" in md and "| caption_nll |" in md
    assert "rank_accuracy=" in res.output
    assert (tmp_path / "eval" / "samples.png").is_file()
    assert len(list((tmp_path / "eval" / "samples").glob("*.png"))) == 20  # one grid per distinct prompt
    g = data["generation"]  # the distribution metrics: set sizes, feature width, intervals; FID refused on 20 images
    assert (g["n_generated"], g["n_real"], g["feature_dim"]) == (20, 50, 64) and g["bootstrap"]["reps"] == 200
    assert g["fid"] is None and g["fid_ci"] is None and "singular" in g["fid_note"]
    assert "20 generated and 50 real" in g["distribution_note"]
    for metric, key in (("kid_mean", "kid_ci"), ("precision", "precision_ci"), ("recall", "recall_ci")):
        assert g[key][0] <= g[metric] <= g[key][1], metric
    assert f"| precision | {g['precision']:.4g} [" in md and "bootstrap interval (200 resamples" in md
    bad = CliRunner().invoke(app, ["eval", str(run_dir), "--suite", "huge"])
    assert bad.exit_code == 2 and "unknown suite 'huge'" in bad.output


def test_free_captions_get_text_metrics_and_shapes_get_geneval(tmp_path):
    """The shapes data: stored free captions (exact match, BLEU / CIDEr / ROUGE against them, prompts taken
    from them) and GenEval-style checks of the generated RGB images."""
    from unimm.data.prepare import prepare_shapes

    prepare_shapes(tmp_path / "shapes", count=120, image_size=16)
    sets = {"data.channels": 3, "train.steps": 4, "sample.max_new_tokens": 12}
    out = train(load_config(None, tiny_overrides(tmp_path / "shapes", **sets)), tmp_path / "run", progress=False)
    model = UnifiedModel.from_pretrained(out)
    result = evaluate(model, TINY, cache_dir=tmp_path / "cache", run_dir=out)
    u, g = result["understanding"], result["generation"]
    assert 0 <= u["exact_match"] <= 1 and {"caption_bleu_4", "caption_cider", "caption_rouge_l"} <= set(u)
    assert "caption_accuracy" not in u  # free captions name no single class
    test = load_split(tmp_path / "shapes", "test", 16, 3)
    assert result["_prompts"] == test.captions[: g["n"]]
    assert set(g["geneval"]) >= {"object", "count", "colour", "position", "overall"}


def test_inception_features_need_local_weights_and_say_so(run_dir, tmp_path):
    res = CliRunner().invoke(app, ["eval", str(run_dir), "--inception", str(tmp_path / "missing.pth")])
    assert res.exit_code == 2 and ("torch-fidelity" in res.output or "not found" in res.output)


def test_cost_has_inference_flops_and_the_runs_ledger(run_dir, digits_dir, tmp_path):
    from unimm.eval.report import eval_document
    from unimm.flops import count_flops

    model = UnifiedModel.from_pretrained(run_dir)
    result = evaluate(model, TINY, seed=3, cache_dir=tmp_path, run_dir=run_dir)
    test, prompts = load_split(digits_dir, "test", 8, 1), result["_prompts"][:4]
    with torch.no_grad(), count_flops() as caption:
        model.caption(test.images[:4])
    with torch.no_grad(), count_flops() as generate:
        model.generate(prompts, generator=torch.Generator().manual_seed(3))
    inference = result["cost"]["inference"]
    assert inference["flops_per_caption"] == caption.get_total_flops() / 4 > 0
    assert inference["flops_per_image"] == generate.get_total_flops() / 4 > 0
    ledger = result["cost"]["training"]["ledger"]
    assert ledger == json.loads((run_dir / "ledger.json").read_text()) and ledger["total"] > 0
    text = eval_document(result, "tiny", tmp_path).markdown(tmp_path)
    assert "inference FLOPs per caption / per generated image" in text and "total FLOPs of the run" in text


@pytest.mark.parametrize("preset", ["show-o", "chameleon"])
def test_step_sweep_records_the_passes_each_image_took(preset, digits_dir, tmp_path):
    """Quality per inference step: show-o's MaskGIT runs one backbone pass per round, so its points follow the step
    counts in order; chameleon's codes take one pass each whatever the step count, so it gets one point at that
    native count (4 x 4 codes at 8 px with a 2x downsampling tokenizer). The same prompts for every point."""
    from conftest import tiny_preset
    from unimm.eval.harness import step_sweep
    from unimm.eval.report import step_rows
    from unimm.train.loop import build_tokenizer, resolve_data

    cfg = tiny_preset(digits_dir, preset)
    torch.manual_seed(0)
    model = UnifiedModel(cfg, build_tokenizer(cfg, *resolve_data(cfg))).eval()
    test = load_split(digits_dir, "test", 8, 1)
    clf, _ = load_or_train_classifier(digits_dir, "train", 8, 1, tmp_path / "classifiers", steps=20)
    suite = Suite(**{**TINY.__dict__, "step_sweep": (1, 2, 4), "step_sweep_per_class": 1, "batch_size": 4})
    out = step_sweep(model, test, suite, seed=0, clf=clf)
    points = out["step_sweep"]
    assert all(p["n"] == 10 and 0 <= p["prompt_accuracy"] <= 1 and p["s_per_image"] > 0 for p in points)
    rows = [r[:2] for r in step_rows(out)]  # eval.md's table: sampler steps, passes
    if preset == "show-o":
        assert [(p["steps"], p["passes"]) for p in points] == [(1, 1), (2, 2), (4, 4)] and "step_sweep_note" not in out
        assert rows == [["1", "1"], ["2", "2"], ["4", "4"]]
    else:
        assert [(p["steps"], p["passes"]) for p in points] == [(None, 16)] and rows == [["native", "16"]]
        assert "one backbone pass" in out["step_sweep_note"]
