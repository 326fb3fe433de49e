"""Evaluation: a judge classifier, caption/VQA accuracy and generated-image accuracy."""

from unimm.eval.classifier import (
    ImageClassifier,
    accuracy,
    dataset_fingerprint,
    load_or_train_classifier,
    train_classifier,
)

__all__ = [
    "ImageClassifier",
    "accuracy",
    "dataset_fingerprint",
    "load_or_train_classifier",
    "train_classifier",
]
