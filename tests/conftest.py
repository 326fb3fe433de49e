"""Shared fixtures: a tiny labelled IDX dataset (real scikit-learn digits) and tiny configs."""

from pathlib import Path

import numpy as np
import pytest
import torch

from unimm.config import load_config
from unimm.data import make_meta, write_idx_split, write_meta

torch.set_num_threads(1)
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """scikit-learn's 8x8 digits in the IDX format: 200 train / 50 val / 50 test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images / 16 * 255).astype(np.uint8)
    root = tmp_path_factory.mktemp("digits")
    for split, sl in {"train": slice(0, 200), "val": slice(200, 250), "test": slice(250, 300)}.items():
        write_idx_split(root, split, images[sl], d.target[sl])
    write_meta(root, make_meta("idx", "digits", NAMES, "digit"))
    return root


def tiny_overrides(data_path: Path, **extra) -> list[str]:
    base = {
        "data.path": f'"{data_path}"',
        "data.vocab_size": 300,
        "model.dim": 32,
        "model.depth": 2,
        "model.heads": 2,
        "image.latent": "pixels",
        "image.patch_size": 4,
        "train.batch_size": 8,
        "train.steps": 4,
        "train.warmup": 1,
        "train.log_every": 1,
        "train.save_every": 2,
        "train.tensorboard": "false",
        "sample.steps": 3,
        "sample.max_new_tokens": 6,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def tiny_cfg(digits_dir):
    return load_config(None, tiny_overrides(digits_dir))
