"""A small video evaluator trained in-project, whose features give an FVD-style Fréchet distance between clips.

It is the classifier of ``classifier.py`` over a clip's frames stacked as channels (``[N, T*C, H, W]``: the first
convolution sees every frame at once, so the features carry motion), trained to name each clip's digit and its
first direction together (digit x direction classes, from each clip's own answers), with the 64-d bottleneck of
the FID features. This is not the I3D network of the FVD paper (Unterthiner et al. 2018): no such weights exist
here, and numbers from it compare only with numbers from the same evaluator on the same dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from einops import rearrange

from unimm.data import load_split
from unimm.data.datasets import ImageTextData
from unimm.data.directions import DIRECTIONS
from unimm.data.video_text import DIRECTION_QUESTION
from unimm.eval.cache import cache_path, read_evaluator, save_evaluator
from unimm.eval.classifier import ARCH_VERSION, FEATURE_DIM, ImageClassifier, accuracy, train_classifier

DIRECTION_NAMES = tuple(DIRECTIONS)


def stacked(clips: torch.Tensor) -> torch.Tensor:
    """Clips [N, T, C, H, W] -> [N, T*C, H, W]: the frames as channels, in time order."""
    return rearrange(clips, "n t c h w -> n (t c) h w")


def motion_classes(data: ImageTextData) -> ImageTextData:
    """The clips of ``data`` as stacked frames, labelled digit * 8 + the index of their first direction (-1: a clip
    of several digits or without a direction answer)."""
    labels = [
        int(label) * len(DIRECTION_NAMES) + DIRECTION_NAMES.index(dict(qa)[DIRECTION_QUESTION])
        if label >= 0 and DIRECTION_QUESTION in dict(qa)
        else -1
        for label, qa in zip(data.labels.tolist(), data.qa or [[]] * len(data), strict=True)
    ]
    names = [f"{d} {m}" for d in data.class_names or range(10) for m in DIRECTION_NAMES]
    return ImageTextData(stacked(data.images), torch.tensor(labels), None, names, "generic", data.name)


def load_or_train_clip_evaluator(
    data_path: str | Path,
    image_size: int | None,
    channels: int | None,
    cache_dir: str | Path,
    steps: int = 600,
    seed: int = 0,
    progress: bool = False,
) -> tuple[ImageClassifier, float]:
    """The clip evaluator of the video dataset at ``data_path`` (trained on its train split, cached by the dataset's
    content and the recipe) and its digit-and-direction accuracy on the test split."""
    settings = dict(image_size=image_size, channels=channels, steps=steps, seed=seed, arch=ARCH_VERSION)
    path = cache_path("clip-evaluator", data_path, settings, cache_dir)
    if path.is_file():
        state, meta = read_evaluator(path)
        clf = ImageClassifier(
            int(meta["channels"]), int(meta["image_size"]), int(meta["num_classes"]), bottleneck=FEATURE_DIM
        )
        clf.load_state_dict(state)
        return clf.eval(), float(meta["test_accuracy"])
    train = motion_classes(load_split(data_path, "train", image_size, channels))
    clf = train_classifier(train, steps=steps, seed=seed, progress=progress, bottleneck=FEATURE_DIM)
    test = motion_classes(load_split(data_path, "test", image_size, channels))
    acc = accuracy(clf, test.images, test.labels)
    meta = {
        "channels": str(clf.channels),
        "image_size": str(clf.image_size),
        "num_classes": str(clf.num_classes),
        "test_accuracy": repr(acc),
        "settings": json.dumps(settings),
    }
    save_evaluator(path, clf, meta)
    return clf, acc
