"""Evaluation: judge networks trained in-project, understanding / generation / cost metrics, ``evaluate``."""

from unimm.eval.cache import dataset_fingerprint
from unimm.eval.classifier import (
    ImageClassifier,
    accuracy,
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
