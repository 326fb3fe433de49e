"""Frozen encoders in the FLOP ledger: charged once per distinct input, as if their outputs were precomputed.

The writer's codec (a VAE's or a VQ-VAE's encoder; pixel patches cost nothing) is fitted before training and
then frozen: what it makes of a training image never changes, so a run could encode each input once and reuse
the latents. The ledger charges it that way, for every strategy alike (no latents are actually cached):

- ``StepFlops`` counts a training step as training always has (``count_flops()`` around forward + backward)
  and measures the codec's ``encode`` apart, inside the same step: the step's FLOPs exclude it, and the
  encoder's FLOPs per input are kept;
- ``EncoderInputs`` replays the deterministic example stream and counts the distinct inputs the codec encodes
  over a run's steps (``codec_inputs``): every image when the reader is shared, since it reads through the writer,
  otherwise the generated ones; an example's image is the input (dataset image, augmentation), an edit's source
  (read: a shared reader's) an input of its own, a conversation's images inputs by their content. A shifted
  (rotated, zoomed) copy of an image is an input of its own (a cache would hold it), so with ``data.shift`` fewer
  repeats are saved (with ``data.rotate`` / ``scale`` almost none). The count is at most the number of distinct
  images times the number of distinct augmentations.

The once-charge is then FLOPs per input x distinct inputs. Encoders that train (a ViT reader, fine-tuned) and
frozen parts that act on trainable inputs (the connector's frozen decoder) are counted at every step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from unimm.flops import count_flops

if TYPE_CHECKING:
    from unimm.tasks import Example
    from unimm.train.stream import Augment, ExampleStream

Sample = tuple[int, "Example", "Augment"]  # one sample of the stream: (dataset index, example, augmentation)


class StepFlops:
    """FLOPs of training steps less the frozen codec's ``encode``, plus that encoder's FLOPs and inputs."""

    def __init__(self, codec: nn.Module) -> None:
        self.codec = codec
        self.flops = 0  # counted FLOPs without the encoder
        self.encoder_flops = 0
        self.encoder_inputs = 0  # images encoded (with repeats)

    def _metered(self, encode: Callable):
        def metered(images, *args, **kwargs):
            with count_flops() as counter:
                out = encode(images, *args, **kwargs)
            self.encoder_flops += counter.get_total_flops()
            self.encoder_inputs += int(images.shape[0])
            return out

        return metered

    @contextmanager
    def count(self) -> Iterator[None]:
        """Count what runs inside: forward + backward of a micro-batch. The codec's ``encode_cache`` (if any) steps
        aside meanwhile, so that the encoder is measured on every input, as without a cache."""
        before = self.encoder_flops
        cache = getattr(self.codec, "encode_cache", None)
        self.codec.encode_cache = None
        self.codec.encode = self._metered(type(self.codec).encode.__get__(self.codec))
        try:
            with count_flops() as counter:
                yield
        finally:
            del self.codec.encode  # the codec's own method again
            self.codec.encode_cache = cache
        self.flops += counter.get_total_flops() - (self.encoder_flops - before)

    @property
    def per_input(self) -> float:
        """Encoder FLOPs per encoded image (0 when nothing was encoded)."""
        return self.encoder_flops / self.encoder_inputs if self.encoder_inputs else 0.0


def codec_inputs(shared_reader: bool) -> Callable[[int, Example, Augment], list[Hashable]]:
    """The inputs the writer's codec encodes for one sample of the stream (dataset index, example, augmentation) in
    training (``UnifiedModel.forward``), each named so that equal inputs have equal names. A shared reader
    (``Reader.shared``) reads through the writer, so every image is encoded; otherwise only the generated ones. The
    example's image (text-to-image; captioning and VQA read it; an edit's target) is ``(index, augmentation)``, an
    edit's source (never augmented) ``("source", index)``, a conversation's images (its turns hold them; the
    example's own image is unused) their content's digest. In the order of the example's spans."""

    def inputs(index: int, example: Example, augment: Augment) -> list[Hashable]:
        if example.task == "conversation":
            return [
                ("content", _digest(part))
                for turn in example.turns
                if shared_reader or turn.role == "assistant"
                for part in turn.parts
                if isinstance(part, torch.Tensor)
            ]
        read_source = example.task == "edit" and shared_reader  # first: the source comes before the target
        own = shared_reader or example.task in ("t2i", "edit")
        return [("source", index)] * read_source + [(index, augment)] * own

    return inputs


def _digest(image: torch.Tensor) -> str:
    return hashlib.sha1(image.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class EncoderInputs:
    """Distinct inputs of the frozen codec over a run's first ``steps`` steps, replayed from the stream."""

    def __init__(
        self, stream: ExampleStream, micro_per_step: int, encoded: Callable[[int, Example, Augment], list[Hashable]]
    ) -> None:
        self.stream, self.micro, self.encoded = stream, micro_per_step, encoded
        self.seen: set[Hashable] = set()
        self.steps = 0
        self.inputs = 0  # encoded images with repeats

    def advance(self, steps: int) -> EncoderInputs:
        """Take in the steps up to ``steps`` (steps already taken in are not replayed)."""
        for step in range(self.steps, steps):
            for k in range(step * self.micro, (step + 1) * self.micro):
                for sample in self.stream.samples(k):
                    names = self.encoded(*sample)
                    self.seen.update(names)
                    self.inputs += len(names)
        self.steps = max(self.steps, steps)
        return self

    @property
    def distinct(self) -> int:
        return len(self.seen)
