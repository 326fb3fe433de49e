"""One evaluation harness for every strategy: ``evaluate(model, suite)``.

Everything is judged on the run's own dataset (its test split) by evaluator networks trained
in-project and cached by the content hash of their data and recipe: a CNN classifier (prompt
following; the same network with a 64-d bottleneck, trained apart, gives the features of FID / KID /
precision-recall) and a small CLIP (text-image
alignment). Their own held-out accuracy is part of the result. Given a seed the numbers are
deterministic (greedy captions, seeded sampling, seeded bootstrap resamples); only the timings vary.

- understanding: captions of held-out images (class accuracy when the captions name a class; BLEU,
  CIDEr-D, ROUGE-L against the reference captions; exact match for stored free captions), VQA, and for
  class-labelled data the format-free rank accuracy (the class whose captions are the most likely after the
  image) with the held-out caption NLL;
- generation: images for prompts drawn from the test split (classifier agreement with the prompted
  class, FID / KID / precision / recall against real test images with bootstrap intervals, CLIP score, and
  GenEval-style checks on the shapes data), and the writer's held-out image loss of the understood images after
  their prompts;
- quality per inference step (``suite.step_sweep``): a smaller fixed set of class prompts generated again at each
  listed sampler step count, with its prompt accuracy, the backbone passes each image took (counted) and the
  seconds per image; a writer with a fixed pass count (ar-codes: one per code) gets one point at it;
- cost: parameters total / active / trainable, latency and samples/s of both directions, peak memory,
  inference FLOPs per caption and per generated image, and the training FLOPs / tokens / wall time and the
  FLOP ledger the run recorded.

``unimm eval`` and ``unimm demo`` both report through ``evaluate``; the demo uses the ``demo`` suite.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from unimm.data import CaptionTemplates, load_split, templates_for
from unimm.data.datasets import ImageTextData
from unimm.eval.cache import default_cache
from unimm.eval.classifier import FEATURE_DIM, load_or_train_classifier
from unimm.eval.clip import clip_score, load_or_train_clip
from unimm.eval.cost import counting_calls, inference_flops, parameter_counts, peak_memory_mib, timed, training_cost
from unimm.eval.distribution import FeatureExtractor, distribution_metrics, extract_features, inception_extractor
from unimm.eval.geneval import geneval_scores
from unimm.eval.ranking import rank_classes
from unimm.eval.suites import MIN_DISTRIBUTION_SAMPLES, Suite, suite_by_name
from unimm.eval.suites import SUITES as SUITES  # re-exported: callers and tests know it here
from unimm.eval.text_metrics import caption_metrics


def _suite(suite: str | Suite) -> Suite:
    return suite if isinstance(suite, Suite) else suite_by_name(suite)


def _batched(fn, items: list, batch_size: int, desc: str, progress: bool) -> tuple[list, float]:
    """Apply ``fn`` to consecutive batches of ``items``; (per-batch outputs, seconds spent in ``fn``)."""
    out, seconds = [], 0.0
    for i in tqdm(range(0, len(items), batch_size), disable=not progress, desc=desc, unit="batch"):
        t0 = time.perf_counter()
        out.append(fn(items[i : i + batch_size]))
        seconds += time.perf_counter() - t0
    return out, seconds


def understanding(model, test: ImageTextData, suite: Suite, progress: bool = False, seed: int = 0) -> dict[str, Any]:
    """Captions (and VQA answers when the dataset has class templates) of the first held-out images.

    With class templates every text is parsed back to a class (``CaptionTemplates.parse``, -1: none or
    several), and each example carries its ``label`` and the ``caption_class`` / ``answer_class`` read; with
    ``suite.rank`` the class captions of the labelled images are also ranked by likelihood (``ranking.py``,
    masked text's estimate seeded with ``seed``)."""
    n = len(test) if suite.understand_n is None else min(suite.understand_n, len(test))
    idx = list(range(n))
    images = test.images[:n]
    captions, seconds = _batched(lambda b: model.caption(images[b]), idx, suite.batch_size, "caption", progress)
    captions = [c for batch in captions for c in batch]
    _, latency = timed(lambda: model.caption(images[:1]))
    out: dict[str, Any] = {
        "n": n,
        "samples_per_s": n / seconds,
        "latency_s": latency,
        "examples": [{"index": i, "caption": captions[i]} for i in range(min(8, n))],
    }
    labels = test.labels[:n].tolist()
    templates = templates_for(test) if test.class_names and any(y >= 0 for y in labels) else None
    if test.captions is not None:  # free captions: compare with the stored ones
        refs = [[test.captions[i]] for i in idx]
        same = [c.strip().lower() == r[0].strip().lower() for c, r in zip(captions, refs, strict=True)]
        out["exact_match"] = sum(same) / n
    else:
        refs = [templates.all_captions(y) for y in labels]
        parsed = [templates.parse(c) for c in captions]
        out["caption_accuracy"] = sum(p == y for p, y in zip(parsed, labels, strict=True)) / n
        out["unparsed"] = parsed.count(-1)
        for e in out["examples"]:
            e["caption_class"] = parsed[e["index"]]
    out.update({f"caption_{k}": v for k, v in caption_metrics(captions, refs).items() if k != "n"})
    keep = [i for i in idx if labels[i] >= 0]
    if templates is not None and suite.rank and keep:
        out.update(rank_classes(model, images[keep], test.labels[keep], templates, suite.batch_size, seed, progress))
    if templates is not None:
        question, _ = templates.vqa(0, random.Random(0))
        answers, _ = _batched(lambda b: model.caption(images[b], question=question), keep, suite.batch_size, "vqa",
                              progress)  # fmt: skip
        answers = {i: a for i, a in zip(keep, (a for batch in answers for a in batch), strict=True)}
        answered = {i: templates.parse(a) for i, a in answers.items()}
        out["vqa_question"] = question
        out["vqa_accuracy"] = sum(answered[i] == labels[i] for i in keep) / max(1, len(keep))
        out["vqa_n"] = len(keep)
        out["vqa_unparsed"] = list(answered.values()).count(-1)
        for e in out["examples"]:
            i = e["index"]
            e.update(label=labels[i], answer=answers.get(i), answer_class=answered.get(i))
    return out


def heldout_prompts(test: ImageTextData, n: int) -> tuple[list[int], list[str]]:
    """The first ``n`` test images that have a prompt, with the prompt each would be generated from: its stored
    caption, or a caption template of its class, the class's templates taken in turn (as generation walks them)."""
    if test.captions is not None:
        return list(range(n)), list(test.captions[:n])
    if not test.class_names:
        return [], []
    templates, seen = templates_for(test), Counter()
    idx, prompts = [], []
    for i, label in enumerate(test.labels[:n].tolist()):
        if label >= 0:
            captions = templates.all_captions(label)
            idx.append(i), prompts.append(captions[seen[label] % len(captions)])
            seen[label] += 1
    return idx, prompts


def heldout_image_loss(model, test: ImageTextData, suite: Suite, seed: int, progress: bool = False) -> dict[str, Any]:
    """The writer's held-out image loss (``UnifiedModel.image_loss``) of the images ``understanding`` reads, each with
    its ``heldout_prompts`` prompt: ``heldout_image_loss`` (the mean per image), ``heldout_image_loss_n`` and
    ``heldout_samples_per_s``. Every batch draws from a generator seeded with ``seed``, and the writers share their
    draws among a batch's images, so the number does not depend on the batch size. A writer without one gets None
    and ``heldout_image_loss_note`` saying why."""
    n = len(test) if suite.understand_n is None else min(suite.understand_n, len(test))
    idx, prompts = heldout_prompts(test, n)
    if not idx:
        return {}

    def losses(batch: list[int]) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return model.image_loss(test.images[[idx[i] for i in batch]], [prompts[i] for i in batch], generator=gen)

    try:
        chunks, seconds = _batched(lambda b: losses(b).cpu(), list(range(len(idx))), suite.batch_size, "image loss",
                                   progress)  # fmt: skip
    except NotImplementedError as err:
        return {"heldout_image_loss": None, "heldout_image_loss_n": len(idx), "heldout_image_loss_note": str(err)}
    return {
        "heldout_image_loss": float(torch.cat(chunks).double().mean()),
        "heldout_image_loss_n": len(idx),
        "heldout_samples_per_s": len(idx) / seconds,
    }


def class_prompts(templates: CaptionTemplates, label: int, count: int) -> list[str]:
    """``count`` prompts for ``label`` walking through every caption template in contiguous blocks
    (template 0 for the first block, ...), so the first samples of a class share one prompt."""
    captions = templates.all_captions(label)
    block = math.ceil(count / len(captions))
    return [captions[i // block] for i in range(count)]


def generation_jobs(test: ImageTextData, suite: Suite) -> list[tuple[str, int]]:
    """(prompt, expected class or -1): ``suite.per_class`` template prompts for class 0, then for class 1, ...;
    or the test split's own captions."""
    if test.captions is not None:
        n = min(suite.prompts_n, len(test))
        return [(test.captions[i], int(test.labels[i])) for i in range(n)]
    templates = templates_for(test)
    return [(p, k) for k in range(templates.num_classes) for p in class_prompts(templates, k, suite.per_class)]


def generation(
    model, test: ImageTextData, suite: Suite, seed: int, clf, clip, extractor, progress: bool = False
) -> tuple[dict[str, Any], torch.Tensor, list[str]]:
    """Generate for every job with one seeded generator; score against the real test images (the
    distribution metrics and CLIP score only when ``extractor`` and ``clip`` are given)."""
    jobs = generation_jobs(test, suite)
    prompts = [p for p, _ in jobs]
    gen = torch.Generator().manual_seed(seed)
    chunks, seconds = _batched(lambda b: model.generate(b, generator=gen).cpu(), prompts, suite.batch_size,
                               "generate", progress)  # fmt: skip
    images = torch.cat(chunks)
    _, latency = timed(lambda: model.generate(prompts[:1], generator=torch.Generator().manual_seed(seed)))
    labels = torch.tensor([y for _, y in jobs])
    out: dict[str, Any] = {"n": len(jobs), "seed": seed, "samples_per_s": len(jobs) / seconds, "latency_s": latency}
    if clf is not None and bool((labels >= 0).any()):
        out.update(prompt_following(clf, images, labels, per_class=test.captions is None))
    if extractor is not None:
        out.update(distribution_scores(test, images, extractor, suite, seed))
    if clip is not None:
        out["clip_score"] = clip_score(clip, images, prompts)
        n_ref = min(len(test), len(images))
        ref_texts = test.captions[:n_ref] if test.captions is not None else [
            templates_for(test).all_captions(int(y))[0] for y in test.labels[:n_ref]
        ]  # fmt: skip
        out["clip_score_real"] = clip_score(clip, test.images[:n_ref], ref_texts)
    if test.name == "shapes" and images.shape[1] == 3:
        out["geneval"] = geneval_scores(images, prompts)
    return out, images, prompts


def sweep_point(
    model,
    prompts: list[str],
    labels: torch.Tensor,
    steps: int | None,
    suite: Suite,
    seed: int,
    clf,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate for ``prompts`` at ``steps`` (None: the writer's own count) with a generator seeded with ``seed``:
    prompt accuracy, the backbone passes per image (forward calls per batch: each pass runs the whole batch, a
    guided one with its unconditional twins) and the seconds per image."""
    gen, kw = torch.Generator().manual_seed(seed), {} if steps is None else {"steps": steps}
    with counting_calls(model.backbone) as calls:
        chunks, seconds = _batched(lambda b: model.generate(b, generator=gen, **kw).cpu(), prompts, suite.batch_size,
                                   f"generate at {steps or 'native'} steps", progress)  # fmt: skip
    passes = calls[0] / len(chunks)
    hits = prompt_following(clf, torch.cat(chunks), labels, per_class=False)
    return {
        "steps": steps,
        "passes": int(passes) if passes.is_integer() else passes,
        "prompt_accuracy": hits["prompt_accuracy"],
        "n": hits["prompt_accuracy_n"],
        "s_per_image": seconds / len(prompts),
    }


def step_sweep(model, test: ImageTextData, suite: Suite, seed: int, clf, progress: bool = False) -> dict[str, Any]:
    """Quality per inference step: ``suite.step_sweep_per_class`` prompts per class (generation's order, the same
    for every run) generated at each of ``suite.step_sweep``'s step counts -> ``{"step_sweep": [point, ...]}``
    (``sweep_point``). A writer whose pass count is fixed (``Writer.stepped`` False: ar-codes, one pass per code)
    gets one point at its own count, ``steps`` None, and ``step_sweep_note`` saying so."""
    if clf is None or test.captions is not None:
        return {"step_sweep": [], "step_sweep_note": "needs class-template prompts and the classifier"}
    jobs = generation_jobs(test, replace(suite, per_class=suite.step_sweep_per_class))
    prompts, labels = [p for p, _ in jobs], torch.tensor([y for _, y in jobs])
    if not model.writer.stepped:
        point = sweep_point(model, prompts, labels, None, suite, seed, clf, progress)
        note = f"writer {model.cfg.writer.kind}: one backbone pass per generated token, whatever the step count"
        return {"step_sweep": [point], "step_sweep_note": note}
    points = [sweep_point(model, prompts, labels, k, suite, seed, clf, progress) for k in sorted(suite.step_sweep)]
    return {"step_sweep": points}


def distribution_scores(
    test: ImageTextData, images: torch.Tensor, extractor, suite: Suite, seed: int
) -> dict[str, Any]:
    """FID, KID, precision and recall of the generated ``images`` against as many real test images (at least
    ``MIN_DISTRIBUTION_SAMPLES`` when the split has them), with bootstrap intervals seeded by ``seed``; each
    set's features are extracted once. A ``distribution_note`` says when either set is under the minimum."""
    real = test.images[: max(len(images), min(len(test), MIN_DISTRIBUTION_SAMPLES))]
    feats = extract_features(extractor, real), extract_features(extractor, images)
    out = distribution_metrics(*feats, reps=suite.bootstrap_reps, seed=seed)
    if min(len(real), len(images)) < MIN_DISTRIBUTION_SAMPLES:
        out["distribution_note"] = (
            f"{len(images)} generated and {len(real)} real images (the test split has {len(test)}): under the "
            f"{MIN_DISTRIBUTION_SAMPLES:,} per set docs/eval.md asks of these metrics"
        )
    return out


def prompt_following(clf, images: torch.Tensor, labels: torch.Tensor, per_class: bool) -> dict[str, Any]:
    """Share of images (those with a prompted class, label >= 0) that ``clf`` judges to show it; with
    ``per_class`` (class-balanced template prompts) also the share for each class."""
    keep = labels >= 0
    hits = (clf.predict(images[keep]) == labels[keep]).float()
    out: dict[str, Any] = {"prompt_accuracy": float(hits.mean()), "prompt_accuracy_n": int(keep.sum())}
    if per_class:
        counts = torch.bincount(labels[keep], minlength=clf.num_classes).clamp(min=1)
        right = torch.bincount(labels[keep], weights=hits, minlength=clf.num_classes)
        out["prompt_accuracy_per_class"] = (right / counts).tolist()
    return out


def evaluate(
    model,
    suite: str | Suite = "quick",
    seed: int = 0,
    data_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    progress: bool = False,
    inception_weights: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a ``UnifiedModel`` on its dataset's test split. Returns a JSON-ready dict (with
    ``"_images"``/``"_prompts"``: the generated samples, for the report; drop them before saving).
    ``inception_weights``: a local InceptionV3 FID weights file to use for FID / KID / precision-recall
    instead of the in-project evaluator (needs torch-fidelity; nothing is downloaded)."""
    s = _suite(suite)
    cfg = model.cfg
    path = data_path or cfg.data.path
    size, ch, names = cfg.data.image_size, cfg.data.channels, cfg.data.class_names
    test = load_split(path, "test", size, ch, names)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache()
    model.eval()
    inception = inception_extractor(inception_weights) if inception_weights is not None else None  # fail early
    labelled = bool(test.class_names) and bool((test.labels >= 0).any())
    clf, clf_acc = (None, None)
    if labelled:
        clf, clf_acc = load_or_train_classifier(
            path, "train", size, ch, cache / "classifiers", steps=s.classifier_steps, progress=progress
        )
    clip, clip_acc, extractor, features = None, None, None, None
    if s.distribution:
        clip, clip_acc = load_or_train_clip(path, "train", size, ch, cache / "clip", steps=s.clip_steps,
                                            progress=progress, class_names=names)  # fmt: skip
        if inception is not None:  # the standard FID features, from weights the user has locally
            extractor, features = inception, f"InceptionV3 ({inception_weights})"
        elif clf is not None:  # the judge's architecture with a 64-unit bottleneck, trained apart for the features
            feature_clf, feature_acc = load_or_train_classifier(
                path, "train", size, ch, cache / "classifiers", steps=s.classifier_steps, progress=progress,
                bottleneck=FEATURE_DIM,
            )  # fmt: skip
            extractor = FeatureExtractor(feature_clf)
            features = f"{FEATURE_DIM}-d bottleneck of a feature classifier ({feature_acc:.1%} test accuracy)"
        else:
            extractor = FeatureExtractor(clip.image_encoder, output=True)
            features = f"CLIP image embedding ({extractor.num_features}-d)"
    torch.manual_seed(seed)
    result: dict[str, Any] = {
        "suite": asdict(s),
        "seed": seed,
        "dataset": {"path": str(path), "name": test.name, "test_images": len(test)},
        "evaluators": {
            "classifier_test_accuracy": clf_acc,
            "clip_test_retrieval_accuracy": clip_acc,
            "fid_features": features,
        },
        "understanding": understanding(model, test, s, progress, seed),
    }
    gen, images, prompts = generation(model, test, s, seed, clf, clip, extractor, progress)
    device = next(model.parameters()).device
    result["generation"] = gen
    if s.heldout:
        gen.update(heldout_image_loss(model, test, s, seed, progress))
    if s.step_sweep:
        gen.update(step_sweep(model, test, s, seed, clf, progress))
    result["cost"] = {
        "params": parameter_counts(model),
        "peak_memory_mib": peak_memory_mib(device),
        "training": training_cost(run_dir),
        "inference": inference_flops(model, test.images[:4], prompts[:4], seed),
    }
    result["_images"], result["_prompts"] = images, prompts
    return result
