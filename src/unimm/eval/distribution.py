"""Distribution metrics of generated images on evaluator features: FID, KID and improved precision/recall.

FID and KID come from torchmetrics with a custom feature module, so they need neither torch-fidelity nor
InceptionV3: by default the features are the penultimate layer of the dataset's own judge classifier,
which makes the numbers comparable across runs on one dataset but not with published Inception FIDs.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from unimm.data import convert_channels, resize
from unimm.eval.classifier import ImageClassifier


class FeatureExtractor(nn.Module):
    """Penultimate features ``[B, F]`` of a trained ``ImageClassifier``, frozen and always in eval mode.

    Takes images in torchmetrics' ``normalize=True`` convention, float ``[B, C, H, W]`` in [0, 1] (uint8 in
    [0, 255] is accepted too), maps them to the classifier's [-1, 1] and converts channels and size to its.
    """

    def __init__(self, clf: ImageClassifier) -> None:
        super().__init__()
        self.clf = clf.eval().requires_grad_(False)
        self.num_features = clf.head.in_features  # read by torchmetrics instead of probing a 299x299 image

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        x = convert_channels(x * 2.0 - 1.0, self.clf.channels)
        return self.clf.features(resize(x, self.clf.image_size))


class _InceptionFeatures(nn.Module):
    """torchmetrics' InceptionV3 (2048 pool features) behind the same [0, 1] float input as ``FeatureExtractor``."""

    def __init__(self, inception: nn.Module) -> None:
        super().__init__()
        self.inception = inception
        self.num_features = 2048

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.inception(images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images)


def inception_extractor(weights_path: str | Path) -> nn.Module:
    """The standard InceptionV3 FID features from a local weights file (torch-fidelity's
    ``pt_inception-2015-12-05``); never downloads. Needs torch-fidelity, which itself needs torchvision."""
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ModuleNotFoundError(
            "the InceptionV3 feature path needs torch-fidelity (and torchvision), which is not installed; "
            "use FeatureExtractor(classifier) for in-project features instead"
        )
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"InceptionV3 weights not found at {path} (unimm never downloads them)")
    from torchmetrics.image.fid import NoTrainInceptionV3

    net = NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
    )
    return _InceptionFeatures(net)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Our [-1, 1] images -> the [0, 1] floats torchmetrics expects with ``normalize=True``."""
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)


@torch.no_grad()
def extract_features(extractor: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Features ``[N, F]`` of [-1, 1] images ``[N, C, H, W]``, computed in batches."""
    return torch.cat([extractor(to_unit_range(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])


class _Precomputed(nn.Module):
    """Hands already extracted features to torchmetrics, so FID and KID share one extraction pass."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid_kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    extractor: nn.Module,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    batch_size: int = 500,
    seed: int = 0,
) -> dict[str, float]:
    """FID and KID between [-1, 1] image sets ``real`` and ``fake`` (``[N, C, H, W]``) on ``extractor`` features.

    KID subsets hold ``min(kid_subset_size, n_real, n_fake)`` samples, drawn with their own RNG seeded by
    ``seed``. Returns ``fid``, ``kid_mean``, ``kid_std``, ``kid_subset_size``, ``n_real`` and ``n_fake``.
    """
    if min(len(real), len(fake)) < 2:
        raise ValueError(f"FID/KID need at least 2 images per set, got {len(real)} real and {len(fake)} fake")
    real_feats = extract_features(extractor, real, batch_size).double()
    fake_feats = extract_features(extractor, fake, batch_size).double()
    passthrough = _Precomputed(real_feats.shape[1])
    subset = min(kid_subset_size, len(real), len(fake))
    fid = FrechetInceptionDistance(feature=passthrough)
    with warnings.catch_warnings():  # its "keeps all features in memory" warning: ours are already in memory
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        kid = KernelInceptionDistance(feature=passthrough, subsets=kid_subsets, subset_size=subset)
    for metric in (fid, kid):
        metric.update(real_feats, real=True)
        metric.update(fake_feats, real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global RNG
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "kid_subset_size": subset,
        "n_real": len(real),
        "n_fake": len(fake),
    }


def precision_recall(
    real_feats: torch.Tensor, fake_feats: torch.Tensor, k: int = 3, chunk: int = 1024
) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of feature sets ``[N, F]`` and ``[M, F]``.

    Each set's manifold is the union of balls around its points, of radius the distance to the point's
    ``k``-th nearest neighbour in its own set. Precision is the share of fake points inside the real
    manifold (fidelity), recall the share of real points inside the fake manifold (coverage).
    Returns ``precision``, ``recall`` and ``k``.
    """
    if min(len(real_feats), len(fake_feats)) <= k:
        raise ValueError(f"need more than k={k} points per set, got {len(real_feats)} real and {len(fake_feats)} fake")
    real, fake = real_feats.double(), fake_feats.double()
    real_radii, fake_radii = _knn_radii(real, k, chunk), _knn_radii(fake, k, chunk)
    return {
        "precision": _share_inside(fake, real, real_radii, chunk),
        "recall": _share_inside(real, fake, fake_radii, chunk),
        "k": k,
    }


def _knn_radii(feats: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance ``[N]`` from each point to its k-th nearest other point (k + 1 counts the point itself)."""
    return torch.cat(
        [torch.cdist(feats[i : i + chunk], feats).kthvalue(k + 1, dim=1).values for i in range(0, len(feats), chunk)]
    )


def _share_inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """Fraction of ``points`` within ``radii`` of at least one of ``centres``."""
    inside = [(torch.cdist(points[i : i + chunk], centres) <= radii).any(dim=1) for i in range(0, len(points), chunk)]
    return float(torch.cat(inside).double().mean())
