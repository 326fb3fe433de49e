"""An in-project CLIP trained on a dataset's own images and captions, cached by content hash, and CLIPScore.

For IDX datasets (no stored captions) each training image gets a caption drawn from the class templates
(``templates_for``); folder datasets use their stored captions. The model's held-out retrieval accuracy
is reported next to every CLIPScore, as the classifier's accuracy is next to generated accuracy.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from unimm.data import ImageTextData, load_split, templates_for
from unimm.eval.cache import cache_path, default_cache, read_evaluator, save_evaluator
from unimm.eval.clip_model import ClipModel, WordVocab

ARCH_VERSION = 1  # bump when the network or training recipe changes: old cache entries stop matching

CaptionDraw = Callable[[torch.Tensor, random.Random], list[str]]


def _caption_source(data: ImageTextData) -> tuple[torch.Tensor, CaptionDraw, torch.Tensor, list[str]]:
    """(images, draw captions for indices, group id per image, every possible text) of a dataset.

    Images of one group have interchangeable captions (same class for templates, same text otherwise),
    so the loss counts them as positives of each other rather than as false negatives.
    """
    if data.captions is not None:
        captions = data.captions
        ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
        groups = torch.tensor([ids[c] for c in captions])
        return data.images, lambda idx, rng: [captions[i] for i in idx.tolist()], groups, captions
    templates = templates_for(data)
    keep = data.labels >= 0
    labels = data.labels[keep]
    draw: CaptionDraw = lambda idx, rng: [templates.caption(int(labels[i]), rng) for i in idx.tolist()]
    texts = [c for k in range(templates.num_classes) for c in templates.all_captions(k)]
    return data.images[keep], draw, labels, texts


def contrastive_loss(logits: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over image x text ``logits`` ``[B, B]``; pairs in one group share the target mass."""
    positives = (groups[:, None] == groups[None, :]).float()
    targets = positives / positives.sum(1, keepdim=True)  # symmetric, so it serves both directions
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def train_clip(
    data: ImageTextData,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 3e-3,
    dim: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> ClipModel:
    """Train a ``ClipModel`` on ``data`` with AdamW and a one-cycle schedule; deterministic given ``seed``
    (own generators; the global RNG is left untouched)."""
    images, draw, groups, texts = _caption_source(data)
    if len(images) < 2:
        raise ValueError(f"dataset {data.name!r} has fewer than 2 captioned images to train a CLIP on")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClipModel(WordVocab.build(texts), images.shape[1], images.shape[-1], dim=dim)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    batch_size = min(batch_size, len(images))
    order, pos = torch.randperm(len(images), generator=gen), 0
    model.train()
    for _ in tqdm(range(steps), disable=not progress, desc="train clip", unit="step"):
        if pos + batch_size > len(order):  # new epoch: reshuffle
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        loss = contrastive_loss(model(images[idx], draw(idx, rng)), groups[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def retrieval_accuracy(model: ClipModel, data: ImageTextData, batch_size: int = 32) -> float:
    """Image -> text top-1 accuracy on ``data``.

    IDX (template) datasets: pick among the K classes, each a mean of its template-caption embeddings;
    chance is 1/K. Free captions: pick among the captions of a batch of ``batch_size`` images (only full
    batches, unless the set is smaller); a pick with the same text as the true caption counts as right, so
    chance is about 1/``batch_size``.
    """
    model.eval()
    if data.captions is None:
        templates = templates_for(data)
        keep = data.labels >= 0
        classes = torch.stack(
            [model.encode_texts(templates.all_captions(k)).mean(0) for k in range(templates.num_classes)]
        )
        picks = (model.encode_images(data.images[keep]) @ F.normalize(classes, dim=-1).T).argmax(-1)
        return float((picks == data.labels[keep]).float().mean())
    n = len(data) // batch_size * batch_size or len(data)
    hits = 0
    for i in range(0, n, batch_size):
        captions = data.captions[i : min(i + batch_size, n)]
        picks = (model.encode_images(data.images[i : i + len(captions)]) @ model.encode_texts(captions).T).argmax(-1)
        hits += sum(captions[int(p)] == c for p, c in zip(picks, captions, strict=True))
    return hits / n


@torch.no_grad()
def clip_score(model: ClipModel, images: torch.Tensor, texts: list[str], batch_size: int = 256) -> float:
    """CLIPScore of [-1, 1] ``images`` ``[N, C, H, W]`` against their ``texts``: mean of
    ``100 * max(cos, 0)`` (torchmetrics' convention; Hessel et al. 2021 use ``2.5 * max(cos, 0)``)."""
    if len(images) != len(texts):
        raise ValueError(f"got {len(images)} images but {len(texts)} texts")
    model.eval()
    cos = [
        (model.encode_images(images[i : i + batch_size]) * model.encode_texts(texts[i : i + batch_size])).sum(-1)
        for i in range(0, len(texts), batch_size)
    ]
    return float(100 * torch.cat(cos).clamp(min=0).mean())


def load_or_train_clip(
    data_path: str | Path,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    cache_dir: str | Path | None = None,
    eval_split: str = "test",
    steps: int = 300,
    batch_size: int = 128,
    dim: int = 64,
    seed: int = 0,
    progress: bool = False,
    class_names: list[str] | None = None,
) -> tuple[ClipModel, float]:
    """A CLIP for the dataset at ``data_path`` and its retrieval accuracy on ``eval_split``.

    Weights and vocabulary live in ``cache_dir/clip-<key>.safetensors`` (default ``$UNIMM_CACHE/clip``); the
    key hashes the dataset files and every setting above, so a changed dataset or recipe trains afresh
    and an unchanged one loads. ``class_names`` (``data.class_names``) replace the dataset's own.
    """
    settings = dict(
        split=split, image_size=image_size, channels=channels, eval_split=eval_split,
        steps=steps, batch_size=batch_size, dim=dim, seed=seed, arch=ARCH_VERSION,
    )  # fmt: skip
    if class_names is not None:  # only then: the keys of caches written before the setting stay valid
        settings["class_names"] = list(class_names)
    path = cache_path("clip", data_path, settings, cache_dir or default_cache() / "clip")
    if path.is_file():
        return _load(path)
    data = load_split(data_path, split, image_size, channels, class_names)
    model = train_clip(data, steps=steps, batch_size=batch_size, dim=dim, seed=seed, progress=progress)
    acc = retrieval_accuracy(model, load_split(data_path, eval_split, image_size, channels, class_names))
    meta = {
        "config": json.dumps(model.config),
        "vocab": json.dumps(model.vocab.tokens),
        "max_len": str(model.vocab.max_len),
        "test_accuracy": repr(acc),
        "settings": json.dumps(settings),
    }
    save_evaluator(path, model, meta)
    return model, acc


def _load(path: Path) -> tuple[ClipModel, float]:
    state, meta = read_evaluator(path)
    model = ClipModel(WordVocab(json.loads(meta["vocab"]), int(meta["max_len"])), **json.loads(meta["config"]))
    model.load_state_dict(state)
    return model.eval(), float(meta["test_accuracy"])
