"""A small CNN that judges generated images: train once on the real data, cache by content hash.

The classifier is the yardstick of text-to-image quality ("does a prompt for 7 draw a 7?"), so its
own held-out accuracy is reported next to every generated-accuracy number.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from unimm.data import ImageTextData, load_split
from unimm.data.clips import frames_of, per_frame_labels
from unimm.eval.cache import cache_path, default_cache, read_evaluator, save_evaluator

ARCH_VERSION = 1  # bump when the network or training recipe changes: old cache entries stop matching
# FID's feature network: the judge's architecture with a FEATURE_DIM-wide bottleneck, trained and cached apart (the
# key names the bottleneck); the judge itself (prompt accuracy) keeps the 512-d head, so its verdicts are unchanged
FEATURE_DIM = 64  # 1,000 samples per set estimate a 64x64 covariance well


class ImageClassifier(nn.Module):
    """Three 3x3 conv layers (two followed by 2x2 max-pool when the map is large enough), pooled to a 4x4 map
    (``width * 16`` values), an optional linear bottleneck and a linear head.

    Takes images ``[B, C, H, W]`` in [-1, 1] of side ``image_size`` (8 to 64) and returns logits ``[B, K]``.
    ``features`` gives the ``feature_dim`` values the head reads: the bottleneck's output before the ReLU
    that the head applies (every unit varies, none is cut to zero), or without a bottleneck the pooled map.
    """

    def __init__(
        self, channels: int, image_size: int, num_classes: int, width: int = 32, bottleneck: int | None = None
    ) -> None:
        super().__init__()
        self.channels, self.image_size, self.num_classes = channels, image_size, num_classes
        self.bottleneck = bottleneck
        pools = [image_size // 2 >= 4, image_size // 4 >= 4]  # 8x8 input pools once, 28x28 twice
        layers: list[nn.Module] = []
        c_in = channels
        for i, c_out in enumerate((width // 2, width, width)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if i < 2 and pools[i]:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten()]
        self.feature_dim = bottleneck or width * 16
        if bottleneck:
            layers.append(nn.Linear(width * 16, bottleneck))
        self.features = nn.Sequential(*layers)
        linear = nn.Linear(self.feature_dim, num_classes)
        self.head = nn.Sequential(nn.ReLU(), linear) if bottleneck else linear

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise ValueError(
                f"classifier expects [B, {self.channels}, {self.image_size}, {self.image_size}], "
                f"got {list(images.shape)}"
            )
        return self.head(self.features(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Predicted labels ``[B]`` (eval mode, batched)."""
        was_training = self.training
        self.eval()
        out = torch.cat([self(images[i : i + batch_size]).argmax(-1) for i in range(0, len(images), batch_size)])
        self.train(was_training)
        return out


def num_classes_of(data: ImageTextData) -> int:
    return len(data.class_names) if data.class_names else int(data.labels.max()) + 1


def train_classifier(
    data: ImageTextData,
    steps: int = 600,
    batch_size: int = 128,
    lr: float = 1e-2,
    seed: int = 0,
    progress: bool = False,
    bottleneck: int | None = None,
) -> ImageClassifier:
    """Train on the labelled images of ``data`` with AdamW and a one-cycle schedule (``bottleneck``: see
    ``ImageClassifier``).

    Deterministic given ``seed`` (initialisation and batch order use their own generators; the global
    RNG is left untouched). Unlabelled images (label -1) are skipped. The clips of a video dataset train it
    on their frames, each with its clip's label: it judges single frames.
    """
    keep = data.labels >= 0
    images, labels = frames_of(data.images[keep]), per_frame_labels(data.labels[keep], data.images)
    if len(images) == 0:
        raise ValueError(f"dataset {data.name!r} has no labelled images to train a classifier on")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = ImageClassifier(images.shape[1], images.shape[-1], num_classes_of(data), bottleneck=bottleneck)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    order, pos = torch.randperm(len(images), generator=gen), 0
    clf.train()
    for _ in tqdm(range(steps), disable=not progress, desc="train classifier", unit="step"):
        if pos + batch_size > len(order):  # new epoch: reshuffle
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        loss = F.cross_entropy(clf(_jitter(images[idx], gen)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return clf.eval()


def _jitter(images: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each batch by up to ``max_shift`` pixels (background-padded): cheap augmentation that helps
    the classifier accept slightly off-centre generated digits."""
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
    if dy == dx == 0:
        return images
    p = max_shift
    padded = F.pad(images, (p, p, p, p), value=-1.0)
    h, w = images.shape[-2:]
    return padded[..., p + dy : p + dy + h, p + dx : p + dx + w]


def accuracy(clf: ImageClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` whose predicted label equals ``labels`` (entries with label -1 are skipped); clips
    [N, T, C, H, W]: of their frames, each with its clip's label."""
    keep = labels >= 0
    if not bool(keep.any()):
        return float("nan")
    frames, frame_labels = frames_of(images[keep]), per_frame_labels(labels[keep], images)
    return float((clf.predict(frames) == frame_labels).float().mean())


def load_or_train_classifier(
    data_path: str | Path,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    cache_dir: str | Path | None = None,
    eval_split: str = "test",
    steps: int = 600,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
    bottleneck: int | None = None,
) -> tuple[ImageClassifier, float]:
    """A classifier for the dataset at ``data_path`` and its accuracy on ``eval_split``.

    Weights live in ``cache_dir/classifier-<key>.safetensors`` (default ``$UNIMM_CACHE/classifiers``); the
    key hashes the dataset files and every setting above, so a changed dataset or recipe trains afresh
    and an unchanged one loads.
    """
    settings = dict(
        split=split, image_size=image_size, channels=channels, eval_split=eval_split,
        steps=steps, batch_size=batch_size, seed=seed, arch=ARCH_VERSION,
    )  # fmt: skip
    if bottleneck:  # the feature network: a key of its own (the judge's key is as it was before bottlenecks)
        settings["bottleneck"] = bottleneck
    path = cache_path("classifier", data_path, settings, cache_dir or default_cache() / "classifiers")
    if path.is_file():
        return _load(path)
    data = load_split(data_path, split, image_size, channels)
    clf = train_classifier(
        data, steps=steps, batch_size=batch_size, seed=seed, progress=progress, bottleneck=bottleneck
    )
    held_out = load_split(data_path, eval_split, image_size, channels)
    acc = accuracy(clf, held_out.images, held_out.labels)
    meta = {
        "channels": str(clf.channels),
        "image_size": str(clf.image_size),
        "num_classes": str(clf.num_classes),
        "bottleneck": str(clf.bottleneck or 0),
        "test_accuracy": repr(acc),
        "settings": json.dumps(settings),
    }
    save_evaluator(path, clf, meta)
    return clf, acc


def _load(path: Path) -> tuple[ImageClassifier, float]:
    state, meta = read_evaluator(path)
    shape = (int(meta["channels"]), int(meta["image_size"]), int(meta["num_classes"]))
    clf = ImageClassifier(*shape, bottleneck=int(meta.get("bottleneck", 0)) or None)
    clf.load_state_dict(state)
    return clf.eval(), float(meta["test_accuracy"])
