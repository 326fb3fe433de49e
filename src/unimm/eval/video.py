"""Evaluation of a video model (a run trained on clips, ``data.frames`` set) on its dataset's held-out clips.

- understanding: captions of the first ``suite.clips_n`` test clips (exact match with the stored caption) and
  every stored question of those clips (exact match of the answer; per question and for the direction question);
- generation: one clip per test caption of a one-digit clip, judged from its pixels: per-frame prompt accuracy
  (the in-project classifier, trained on the dataset's frames, on every frame against the prompted digit),
  temporal consistency (the classifier reads one class in every frame; and ``motion.frame_consistency``, the
  share of frames whose cropped digit is the first frame's), and motion accuracy (``motion.py``: the direction
  of the digit's centre of mass against the prompt's first direction, and against all its segments, the bounce
  included). The expected motion is each clip's own answers to the direction questions (``video_text.py``).
  The same scores of the real test clips are reported beside them (``reference``), the ceiling of each metric.
  With ``suite.distribution``: an FVD-style Fréchet distance (with KID, precision / recall) between the generated
  clips and the real test clips on the features of an in-project clip evaluator (``clip_evaluator.py``; not I3D).

Not built: caption BLEU / CIDEr for clips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from unimm.data import load_split
from unimm.data.clips import frames_of, per_frame_labels
from unimm.data.datasets import ImageTextData
from unimm.data.video_text import AFTER_BOUNCE_QUESTION, DIRECTION_QUESTION
from unimm.eval.cache import default_cache
from unimm.eval.classifier import FEATURE_DIM, ImageClassifier, load_or_train_classifier
from unimm.eval.clip_evaluator import load_or_train_clip_evaluator, stacked
from unimm.eval.cost import parameter_counts
from unimm.eval.distribution import FeatureExtractor, distribution_metrics, extract_features
from unimm.eval.motion import frame_consistency, motion_accuracy
from unimm.eval.suites import Suite, suite_by_name


def expected_motion(qa: list[tuple[str, str]]) -> list[str] | None:
    """A clip's direction segments from its own answers (["down", "up"] for a bounce), None if it has none."""
    answers = dict(qa)
    if DIRECTION_QUESTION not in answers:
        return None
    after = answers.get(AFTER_BOUNCE_QUESTION)
    return [answers[DIRECTION_QUESTION], *([after] if after else [])]


def score_clips(clips: torch.Tensor, labels: torch.Tensor, motions: list[list[str]], clf: ImageClassifier) -> dict:
    """Clips [N, T, 1, H, W] in [-1, 1], each showing digit ``labels[i]`` moving as ``motions[i]`` (its segments)
    -> per-frame prompt accuracy, temporal consistency (same class in every frame; mean ``frame_consistency``)
    and motion accuracy (first direction; every segment)."""
    n, frames = clips.shape[:2]
    predicted = clf.predict(frames_of(clips)).view(n, frames)
    intensity = ((clips[:, :, 0] + 1) / 2).clamp(0, 1)  # the motion metric reads intensities >= 0
    return {
        "frame_prompt_accuracy": float((predicted.flatten() == per_frame_labels(labels, clips)).float().mean()),
        "clip_prompt_accuracy": float((predicted == labels[:, None]).all(1).float().mean()),
        "same_class_every_frame": float((predicted == predicted[:, :1]).all(1).float().mean()),
        "frame_consistency": float(np.mean([frame_consistency(c) for c in intensity])),
        "motion_accuracy": motion_accuracy(intensity, [m[0] for m in motions]),
        "motion_accuracy_segments": motion_accuracy(intensity, motions),
        "n": n,
    }


def video_understanding(model, test: ImageTextData, n: int, batch_size: int) -> dict[str, Any]:
    """Captions and answers to each clip's own questions for the first ``n`` test clips (greedy, exact match)."""
    clips = test.images[:n]
    captions = [c for i in range(0, n, batch_size) for c in model.caption(clips[i : i + batch_size])]
    by_question: dict[str, list[tuple[int, str]]] = {}
    for i, pairs in enumerate((test.qa or [[]] * n)[:n]):
        for question, answer in pairs:
            by_question.setdefault(question, []).append((i, answer))
    right: dict[str, list[bool]] = {}
    examples: dict[int, dict[str, str]] = {}
    for question, items in by_question.items():
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            answers = model.caption(clips[[i for i, _ in chunk]], question=question)
            for (i, truth), said in zip(chunk, answers, strict=True):
                right.setdefault(question, []).append(said.strip() == truth)
                if i < 4:
                    examples.setdefault(i, {})[question] = said
    every = [hit for hits in right.values() for hit in hits]
    exact = [c.strip() == ref for c, ref in zip(captions, test.captions[:n], strict=True)]
    direction = right.get(DIRECTION_QUESTION, [])
    return {
        "caption_exact_match": float(np.mean(exact)),
        "vqa_accuracy": float(np.mean(every)) if every else None,
        "direction_vqa_accuracy": float(np.mean(direction)) if direction else None,
        "vqa_accuracy_by_question": {q: float(np.mean(h)) for q, h in right.items()},
        "n": n,
        "vqa_n": len(every),
        "examples": [
            {"index": i, "caption": captions[i], "reference": test.captions[i], "answers": examples.get(i, {})}
            for i in range(min(4, n))
        ],
    }


def video_generation(
    model, test: ImageTextData, clf: ImageClassifier, n: int, batch_size: int, seed: int
) -> tuple[dict[str, Any], torch.Tensor, list[str]]:
    """One clip per caption of the first ``n`` one-digit test clips with direction answers, scored as
    ``score_clips``; -> (scores with the real clips' as ``reference``, the clips, their prompts)."""
    keep = [i for i in range(len(test)) if test.labels[i] >= 0 and expected_motion(test.qa[i]) is not None][:n]
    if not keep:
        raise ValueError(f"dataset {test.name!r}: no one-digit test clips with direction answers to prompt with")
    prompts = [test.captions[i] for i in keep]
    labels, motions = test.labels[keep], [expected_motion(test.qa[i]) for i in keep]
    gen = torch.Generator().manual_seed(seed)
    clips = torch.cat(
        [model.generate(prompts[i : i + batch_size], generator=gen) for i in range(0, len(keep), batch_size)]
    )
    scores = score_clips(clips.cpu(), labels, motions, clf)
    scores["reference"] = score_clips(test.images[keep], labels, motions, clf)
    return scores, clips.cpu(), prompts


def evaluate_video(
    model,
    suite: str | Suite = "quick",
    seed: int = 0,
    data_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a video ``UnifiedModel`` on its dataset's test clips; ``"_clips"`` / ``"_prompts"`` hold the
    generated samples for the report (drop them before saving)."""
    s = suite if isinstance(suite, Suite) else suite_by_name(suite)
    cfg = model.cfg
    if cfg.data.frames is None:
        raise ValueError("evaluate_video needs a model trained on clips (data.frames is None: an image model)")
    path = data_path or cfg.data.path
    size, ch = cfg.data.image_size, cfg.data.channels
    test = load_split(path, "test", size, ch, cfg.data.class_names)
    if test.frames != cfg.data.frames:
        raise ValueError(f"{path}: test clips of {test.frames} frames, the model's have {cfg.data.frames}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache()
    clf, clf_acc = load_or_train_classifier(
        path, "train", size, ch, cache / "classifiers", steps=s.classifier_steps, progress=progress
    )
    model.eval()
    n = min(s.clips_n, len(test))
    generation, clips, prompts = video_generation(model, test, clf, n, s.batch_size, seed)
    evaluators: dict[str, Any] = {"frame_classifier_test_accuracy": clf_acc}
    if s.distribution:
        evaluator, evaluator_acc = load_or_train_clip_evaluator(
            path, size, ch, cache / "clip_evaluators", steps=s.classifier_steps, progress=progress
        )
        extractor = FeatureExtractor(evaluator)
        real, fake = (extract_features(extractor, stacked(x)) for x in (test.images, clips))
        generation["frechet"] = distribution_metrics(real, fake, reps=s.bootstrap_reps, seed=seed)
        evaluators["clip_evaluator_test_accuracy"] = evaluator_acc
        evaluators["frechet_features"] = (
            f"{FEATURE_DIM}-d bottleneck of an in-project clip classifier (frames as channels, digit x first "
            f"direction, {evaluator_acc:.1%} test accuracy): FVD-style, not the I3D FVD"
        )
    return {
        "suite": s.name,
        "seed": seed,
        "dataset": {"path": str(path), "name": test.name, "test_clips": len(test), "frames": test.frames},
        "evaluators": evaluators,
        "understanding": video_understanding(model, test, n, s.batch_size),
        "generation": generation,
        "cost": {"params": parameter_counts(model)},
        "_clips": clips,
        "_prompts": prompts,
    }
