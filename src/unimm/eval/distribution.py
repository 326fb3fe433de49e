"""Distribution metrics of generated images on evaluator features: FID, KID and improved precision/recall,
each with a bootstrap interval.

The features are by default the judge classifier's 64-d bottleneck (``ImageClassifier.features``), which makes
the numbers comparable across runs on one dataset but not with published Inception FIDs. They are extracted
once per set; FID (own eigen-decomposition, checked against torchmetrics in the tests), KID and precision /
recall are then computed from the features, on the whole sets and on ``reps`` bootstrap resamples of both
(``distribution_metrics``). FID is refused (``None`` and a reason) unless each set holds more images than
there are features, since the sample covariance is singular otherwise.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unimm.data import convert_channels, resize
from unimm.eval.classifier import ImageClassifier


class FeatureExtractor(nn.Module):
    """Features ``[B, F]`` of a trained ``ImageClassifier``, frozen and always in eval mode: what its head reads
    (``clf.features``, ``F = clf.feature_dim``), or with ``output`` its output (the CLIP image encoder's
    embedding, ``F = num_classes``).

    Takes images in torchmetrics' ``normalize=True`` convention, float ``[B, C, H, W]`` in [0, 1] (uint8 in
    [0, 255] is accepted too), maps them to the classifier's [-1, 1] and converts channels and size to its.
    """

    def __init__(self, clf: ImageClassifier, output: bool = False) -> None:
        super().__init__()
        self.clf, self.output = clf.eval().requires_grad_(False), output
        self.num_features = clf.num_classes if output else clf.feature_dim  # torchmetrics reads it

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        x = convert_channels(x * 2.0 - 1.0, self.clf.channels)
        x = resize(x, self.clf.image_size)
        return self.clf(x) if self.output else self.clf.features(x)


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


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between feature sets ``[N, F]`` and ``[M, F]``: ||mu_r - mu_f||^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2)),
    with unbiased sample covariances, in float64.

    Raises ``ValueError`` unless both sets hold more points than features: with ``n <= F`` a sample covariance
    has rank ``n - 1 < F``, singular, and the number says more about the sample size than the images.
    """
    n, dim = min(len(real), len(fake)), real.shape[1]
    if n <= dim:
        raise ValueError(fid_refusal(len(real), len(fake), dim))
    ones_r, ones_f = torch.ones(len(real), dtype=torch.float64), torch.ones(len(fake), dtype=torch.float64)
    return _frechet(*_gaussian(real.double(), ones_r), *_gaussian(fake.double(), ones_f))


def fid_refusal(n_real: int, n_fake: int, dim: int) -> str:
    """Why FID is not computed for sets this small (the ``fid_note`` of eval.json)."""
    return (
        f"FID needs more images than feature dimensions in each set (got {n_real} real and {n_fake} generated "
        f"on {dim} features): the sample covariance of n <= {dim} points is singular"
    )


def _gaussian(feats: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[F]`` and unbiased covariance ``[F, F]`` of ``feats`` with each row taken ``counts`` times."""
    n = counts.sum()
    mean = counts @ feats / n
    centred = feats - mean
    return mean, (centred.T * counts) @ centred / (n - 1)


def _frechet(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Frechet distance of two Gaussians; tr((C1 C2)^(1/2)) as the sum of square roots of the eigenvalues of the
    symmetric C1^(1/2) C2 C1^(1/2), which has the same spectrum and stays real and stable."""
    values, vectors = torch.linalg.eigh(cov1)
    root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    inner = root @ cov2 @ root
    trace_root = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * trace_root)


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's kernel ``(x . y / F + 1)^3`` between the rows of ``x`` and ``y`` (as in torchmetrics and the paper)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kernel_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """KID: the unbiased estimate of the squared MMD between feature sets ``[N, F]`` and ``[M, F]`` under
    ``polynomial_kernel``, over all pairs of the two whole sets (torchmetrics averages it over subsets)."""
    real, fake = real.double(), fake.double()
    ones_r, ones_f = torch.ones(len(real), dtype=torch.float64), torch.ones(len(fake), dtype=torch.float64)
    grams = polynomial_kernel(real, real), polynomial_kernel(fake, fake), polynomial_kernel(real, fake)
    return _mmd2(*grams, ones_r, ones_f)


def _mmd2(k_rr: torch.Tensor, k_ff: torch.Tensor, k_rf: torch.Tensor, w: torch.Tensor, v: torch.Tensor) -> float:
    """Unbiased squared MMD with real point ``i`` taken ``w[i]`` times and fake point ``j`` ``v[j]`` times; the
    within-set sums leave out every pair of copies of one point, as the plain estimator leaves out i = j."""

    def within(k: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return (c @ k @ c - (c.square() * k.diagonal()).sum()) / (c.sum().square() - c.square().sum())

    return float(within(k_rr, w) + within(k_ff, v) - 2 * (w @ k_rf @ v) / (w.sum() * v.sum()))


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


class _Neighbours:
    """Every point's distances to the points of its own set, nearest first: the k-NN radii of any resample."""

    def __init__(self, feats: torch.Tensor, k: int) -> None:
        self.k, self.width = k, min(len(feats), 16 * (k + 1))
        self.dist, self.order = torch.cdist(feats, feats).sort(dim=1)

    def radii(self, counts: torch.Tensor) -> torch.Tensor:
        """Per point in the resample (``counts > 0``), the distance to its k-th nearest neighbour there (a copy is
        a neighbour at distance 0; with all counts one, the k-th nearest other point); -1 for the others."""
        taken = counts[self.order[:, : self.width]].cumsum(dim=1)  # resampled points up to each rank, self too
        position = (taken <= self.k).sum(dim=1)
        short = taken[:, -1] <= self.k  # fewer than k + 1 among the nearest `width` (all but never): look further
        if bool(short.any()):
            position[short] = (counts[self.order[short]].cumsum(dim=1) <= self.k).sum(dim=1)
        radii = self.dist.gather(1, position.clamp(max=len(counts) - 1)[:, None])[:, 0]
        return torch.where(counts > 0, radii, -1.0)


class _Resampler:
    """FID, KID, precision and recall of two feature sets with each point taken a given number of times
    (``counts``: ones for the sets themselves, multinomial for a bootstrap resample). Distances and kernels
    are computed once, so a resample costs O(N^2) element operations and no pass of the feature network."""

    def __init__(self, real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> None:
        self.real, self.fake = real.double(), fake.double()
        self.fid_ok = min(len(real), len(fake)) > real.shape[1]
        self.d_rf = torch.cdist(self.real, self.fake)
        self.near_r, self.near_f = _Neighbours(self.real, k), _Neighbours(self.fake, k)
        self.grams = (polynomial_kernel(self.real, self.real), polynomial_kernel(self.fake, self.fake),
                      polynomial_kernel(self.real, self.fake))  # fmt: skip

    def __call__(self, w: torch.Tensor, v: torch.Tensor) -> dict[str, float | None]:
        """The metrics with real point ``i`` taken ``w[i]`` times and fake point ``j`` ``v[j]`` times."""
        w, v = w.double(), v.double()
        fid = _frechet(*_gaussian(self.real, w), *_gaussian(self.fake, v)) if self.fid_ok else None
        fake_inside = (self.d_rf <= self.near_r.radii(w)[:, None]).any(dim=0).double()  # precision's test
        real_inside = (self.d_rf <= self.near_f.radii(v)[None, :]).any(dim=1).double()  # recall's
        return {
            "fid": fid,
            "kid_mean": _mmd2(*self.grams, w, v),
            "precision": float(v @ fake_inside / v.sum()),
            "recall": float(w @ real_inside / w.sum()),
        }


def bootstrap(
    real: torch.Tensor, fake: torch.Tensor, reps: int = 200, seed: int = 0, k: int = 3
) -> tuple[dict[str, float | None], dict[str, torch.Tensor]]:
    """(point estimates on the whole sets, ``reps`` bootstrap replicates per metric) of FID, KID, precision and
    recall. Each replicate draws both sets again with replacement (``torch.Generator`` seeded with ``seed``)."""
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"need more than k={k} points per set, got {len(real)} real and {len(fake)} fake")
    metrics = _Resampler(real, fake, k)
    point = metrics(torch.ones(len(real)), torch.ones(len(fake)))
    gen = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(reps):
        w = torch.bincount(torch.randint(len(real), (len(real),), generator=gen), minlength=len(real))
        v = torch.bincount(torch.randint(len(fake), (len(fake),), generator=gen), minlength=len(fake))
        draws.append(metrics(w, v))
    replicates = {m: torch.tensor([d[m] for d in draws], dtype=torch.float64) for m in point if point[m] is not None}
    return point, replicates


def interval(
    point: float, replicates: torch.Tensor, level: float = 0.95, low: float = 0.0, high: float = math.inf
) -> list[float]:
    """The ``level`` percentile interval of the bootstrap replicates, shifted by the replicates' median offset
    from ``point`` and clipped to the metric's range [``low``, ``high``].

    Resampling with replacement puts copies of points into each set, which moves these statistics (a copy is a
    nearest neighbour at distance 0; fewer distinct points inflate FID), so the raw percentile interval can miss
    the point estimate altogether (docs/eval.md measures it); the shift removes that median bias and keeps the
    spread and skew of the replicates.
    """
    q = torch.quantile(replicates, torch.tensor([(1 - level) / 2, 0.5, (1 + level) / 2], dtype=replicates.dtype))
    lo, mid, hi = (float(x) for x in q)
    return [max(low, point + lo - mid), min(high, point + hi - mid)]


# metric -> (key of its interval in eval.json, the range the interval is clipped to)
INTERVALS = {
    "fid": ("fid_ci", 0.0, math.inf),
    "kid_mean": ("kid_ci", -math.inf, math.inf),  # the unbiased estimate can be negative
    "precision": ("precision_ci", 0.0, 1.0),
    "recall": ("recall_ci", 0.0, 1.0),
}


def distribution_metrics(
    real: torch.Tensor, fake: torch.Tensor, reps: int = 200, seed: int = 0, k: int = 3, level: float = 0.95
) -> dict[str, Any]:
    """FID, KID and improved precision / recall of feature sets ``real`` ``[N, F]`` and ``fake`` ``[M, F]``, each
    with its bootstrap interval (``fid_ci``, ``kid_ci``, ``precision_ci``, ``recall_ci``: [lo, hi], ``interval``;
    ``None`` with no resamples), the set sizes and the feature dimension. FID is ``None``, with the reason in
    ``fid_note``, unless both sets hold more than F points."""
    point, replicates = bootstrap(real, fake, reps, seed, k)
    out: dict[str, Any] = {}
    for name, value in point.items():
        key, low, high = INTERVALS[name]
        ci = interval(value, replicates[name], level, low, high) if value is not None and reps > 0 else None
        out[name], out[key] = value, ci
    if point["fid"] is None:
        out["fid_note"] = fid_refusal(len(real), len(fake), real.shape[1])
    out.update(
        k=k, n_generated=len(fake), n_real=len(real), feature_dim=real.shape[1],
        bootstrap={"reps": reps, "seed": seed, "level": level, "interval": "percentile, median-bias corrected"},
    )  # fmt: skip
    return out


def fid_kid(real: torch.Tensor, fake: torch.Tensor, extractor: nn.Module, batch_size: int = 500) -> dict[str, Any]:
    """FID and KID between [-1, 1] image sets ``real`` and ``fake`` (``[N, C, H, W]``) on ``extractor`` features,
    without intervals: ``fid`` (``None`` with ``fid_note`` when a set has no more images than features),
    ``kid_mean``, ``n_real``, ``n_fake`` and ``feature_dim``."""
    if min(len(real), len(fake)) < 2:
        raise ValueError(f"FID/KID need at least 2 images per set, got {len(real)} real and {len(fake)} fake")
    real_feats = extract_features(extractor, real, batch_size)
    fake_feats = extract_features(extractor, fake, batch_size)
    out: dict[str, Any] = {"kid_mean": kernel_distance(real_feats, fake_feats)}
    try:
        out["fid"] = frechet_distance(real_feats, fake_feats)
    except ValueError as e:
        out.update(fid=None, fid_note=str(e))
    return out | {"n_real": len(real), "n_fake": len(fake), "feature_dim": real_feats.shape[1]}
