"""Deterministic stream of training examples.

Micro-batch ``k`` is a pure function of ``(seed, k)``: sample ``g = k * batch_size + j`` is
item ``perm_epoch[g mod N]`` of a per-epoch permutation seeded by ``(seed, epoch)``, and its
task, template, condition dropout and augmentation (shift, rotation, zoom) come from an RNG seeded by
``(seed, g)``. Resuming at step ``s`` therefore replays exactly the data an uninterrupted run would have seen.
"""

import math
import random
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from unimm.config import DataSection
from unimm.data import CaptionTemplates, ImageTextData
from unimm.sequence import Batch
from unimm.tasks import Example, training_spans
from unimm.train.conversations import conversation_source

if TYPE_CHECKING:
    from unimm.models import UnifiedModel

Augment = tuple[int, int] | tuple[int, int, float, float]  # (dy, dx) shift, then (angle in degrees, zoom)


def one_caption_each(data: ImageTextData, templates: CaptionTemplates | None, seed: int = 0) -> list[str] | None:
    """A caption per image: the stored one, or one drawn from the class templates (None if neither exists)."""
    if data.captions is not None:
        return list(data.captions)
    if templates is None:
        return None
    rng = random.Random(seed)
    return [templates.caption(int(y), rng) if y >= 0 else "" for y in data.labels.tolist()]


class ExampleStream:
    def __init__(
        self,
        data: ImageTextData,
        templates: CaptionTemplates | None,
        mix: DataSection,
        batch_size: int,
        seed: int,
    ) -> None:
        """``mix``: the data section's task mix (understand / VQA fractions, condition dropout) and ``shift``."""
        if data.captions is None and templates is None:
            raise ValueError(f"dataset {data.name!r} has neither captions nor class names to caption with")
        self.data, self.templates, self.obj = data, templates, mix
        self.batch_size, self.seed, self.shift = batch_size, seed, mix.shift
        self.rotate, self.scale = mix.rotate, mix.scale
        self._perm: tuple[int, torch.Tensor] | None = None
        self.conversations = conversation_source(data, templates) if mix.interleaved_fraction else None
        self.items = epoch_items(data, mix.multi_object_repeat, mix.edit_kind_repeat)

    def _item(self, g: int) -> int:
        n = len(self.data) if self.items is None else len(self.items)
        epoch = g // n
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = (epoch, torch.randperm(n, generator=gen))
        i = int(self._perm[1][g % n])
        return i if self.items is None else int(self.items[i])

    def _example(self, i: int, rng: random.Random) -> Example:
        label = int(self.data.labels[i])
        own_qa = self.data.qa[i] if self.data.qa is not None else []  # a video clip's questions about its motion
        can_vqa = bool(own_qa) or (self.templates is not None and label >= 0)

        def caption() -> str:
            if self.data.captions is not None:
                return self.data.captions[i]
            return self.templates.caption(label, rng)

        if self.conversations is not None and rng.random() < self.obj.interleaved_fraction:  # drawn only when > 0
            turns = self.conversations.turns(i, rng)  # None: item i stores none; it follows the task mix
            if turns is not None:
                return Example("conversation", turns=turns)
        if self.data.sources is not None and rng.random() < self.obj.edit_fraction:  # drawn on edit datasets only
            open_place = self.data.open_places is not None and self.data.open_places[i]
            drop = rng.random() < self.obj.cond_drop
            return Example("edit", self.data.instructions[i], drop_condition=drop, open_place=open_place)
        if rng.random() < self.obj.understand_fraction:
            if can_vqa and rng.random() < self.obj.vqa_fraction:
                q, a = rng.choice(own_qa) if own_qa else self.templates.vqa(label, rng)
                return Example("vqa", q, a)
            return Example("caption", caption())
        return Example("t2i", caption(), drop_condition=rng.random() < self.obj.cond_drop)

    @property
    def augments(self) -> bool:
        return bool(self.shift or self.rotate or self.scale)

    def samples(self, k: int) -> list[tuple[int, Example, Augment]]:
        """Micro-batch ``k`` without its pixels: (dataset index, example, augmentation) per sample; the augmentation
        is the shift ``(dy, dx)``, then ``(angle in degrees, zoom)`` when ``data.rotate`` or ``data.scale`` is set
        (drawn after the shift, so runs without them keep their streams)."""
        start = k * self.batch_size
        out = []
        for g in range(start, start + self.batch_size):
            i = self._item(g)
            rng = random.Random(self.seed * 1_000_003 + g)
            example = self._example(i, rng)
            augment = self.augments and example.task in ("caption", "vqa")  # only what is read alone, never generated
            shift = (rng.randint(-self.shift, self.shift), rng.randint(-self.shift, self.shift)) if augment else (0, 0)
            if augment and (self.rotate or self.scale):
                angle = round(rng.uniform(-self.rotate, self.rotate), 3) if self.rotate else 0.0
                zoom = round(rng.uniform(1 - self.scale, 1 + self.scale), 4) if self.scale else 1.0
                shift = (*shift, angle, zoom)
            out.append((i, example, shift))
        return out

    def batch(self, k: int) -> tuple[torch.Tensor, list[Example]]:
        """Micro-batch ``k`` -> (images [B, C, H, W] or clips [B, T, C, H, W], examples); an edit's image is its
        target, its example holds the source."""
        samples = self.samples(k)
        images = self.data.images[[i for i, _, _ in samples]]
        if self.augments:
            images = torch.stack([augment(im, aug) for im, (_, _, aug) in zip(images, samples, strict=True)])
        examples = [replace(ex, source=self.data.sources[i]) if ex.task == "edit" else ex for i, ex, _ in samples]
        return images, examples


def epoch_items(
    data: ImageTextData, multi_object_repeat: int, kind_repeat: dict[str, int] | None = None
) -> torch.Tensor | None:
    """The dataset indices one epoch draws from, in order before shuffling: each edit whose source has two or more
    objects ``multi_object_repeat`` times, each edit of a kind in ``kind_repeat`` that many times (the product where
    both apply), the others once; None (every item once, the plain stream) when nothing repeats or on a dataset that
    is not an edit dataset."""
    kind_repeat = kind_repeat or {}
    if (multi_object_repeat == 1 and not kind_repeat) or data.source_objects is None:
        return None
    kinds = data.edit_kinds or [""] * len(data)
    counts = torch.tensor(
        [
            (multi_object_repeat if k >= 2 else 1) * kind_repeat.get(kind, 1)
            for k, kind in zip(data.source_objects, kinds, strict=True)
        ]
    )
    return torch.repeat_interleave(torch.arange(len(data)), counts)


def make_batch(model: "UnifiedModel", images: torch.Tensor, examples: list[Example]) -> Batch:
    """A micro-batch of the stream (images [B, C, H, W], examples) packed in the model's layouts."""
    return model.pack(
        [training_spans(ex, im, model.layout, model.tokenizer) for ex, im in zip(examples, images, strict=True)]
    )


def augment(image: torch.Tensor, aug: Augment) -> torch.Tensor:
    """``image`` [C, H, W] (or a clip [T, C, H, W]) shifted by ``aug``'s (dy, dx) pixels, then, when ``aug`` also
    holds ``(angle, zoom)``, rotated by ``angle`` degrees and zoomed by ``zoom`` about its centre."""
    out = translate(image, aug[0], aug[1]) if aug[:2] != (0, 0) else image
    return rotate_zoom(out, aug[2], aug[3]) if len(aug) > 2 and aug[2:] != (0.0, 1.0) else out


def rotate_zoom(image: torch.Tensor, angle: float, zoom: float, fill: float = -1.0) -> torch.Tensor:
    """Rotate ``image`` [..., C, H, W] by ``angle`` degrees (clockwise as displayed, rows down) and zoom it by
    ``zoom`` (> 1 enlarges) about its centre, bilinearly; pixels from outside get ``fill`` (the background, -1)."""
    x = (image - fill).reshape(-1, *image.shape[-3:])
    a = math.radians(angle)
    cos, sin = math.cos(a) / zoom, math.sin(a) / zoom  # output -> input coordinates: the inverse map
    theta = torch.tensor([[cos, sin, 0.0], [-sin, cos, 0.0]], dtype=x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out + fill).reshape(image.shape)


def translate(image: torch.Tensor, dy: int, dx: int, fill: float = -1.0) -> torch.Tensor:
    """Shift an image [C, H, W] by (dy, dx) pixels; uncovered pixels get ``fill`` (the background at -1)."""
    out = torch.full_like(image, fill)
    h, w = image.shape[-2:]
    src_y, dst_y = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    src_x, dst_x = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[..., dst_y, dst_x] = image[..., src_y, src_x]
    return out
