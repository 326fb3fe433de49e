"""Interleaved training conversations with exact ground truth, made from a dataset's own images
(``data.interleaved_fraction``): the tasks that ``eval/interleaved.py`` scores, answered correctly.

- A digit dataset (``caption_kind = "digit"``, MNIST): the ``digits`` and ``count`` tasks. The user asks
  ("write the digits of 2024, one image each", "three, then the next one, then the next"); the model answers each
  slot with its number word, then an image of that digit drawn from the dataset ("two", image, "zero", image, ...).
- The shapes dataset (two-object captions "a X left of a Y"): the ``shapes`` task. The user asks "draw a Y. Now
  add a X to its right."; the model answers "a Y", the scene with X painted out (background), then "a X right of
  a Y" and the scene itself, so the second image keeps the first one's object where it was (consistency).
  Scenes whose two objects share a colour are skipped (painting out goes by colour).
With class templates, a third of the conversations go on for a second turn, as a chat does: the user attaches
one of the images the model drew (a digit; the shapes task's first scene, one object) and asks a template question
about it ("what digit is this?"), the model answers its class. Another third open with such a question about an
attached training image (one with a class label), then ask for the drawing: a chat's question may come first. Every
draw comes from the caller's ``random.Random`` (the stream's per-example RNG).
"""

from __future__ import annotations

import math
import random

import torch

from unimm.data import CaptionTemplates, ImageTextData
from unimm.data.shapes import COLOURS, parse_caption
from unimm.eval.interleaved import NUMBER_WORDS, InterleavedTask, count_task, digits_task, make_tasks, shapes_task
from unimm.sequence import packed_length
from unimm.tasks import Layout, Turn, training_conversation_spans, turn_spans
from unimm.tokenizers.text import TextTokenizer

PLACES = {"right of": "to its right", "left of": "to its left", "above": "above it", "below": "below it"}


def digit_task(rng: random.Random) -> InterleavedTask:
    """A ``digits`` task (a number of 1 to 4 digits) or a ``count`` task (2 to 4 images), half and half."""
    if rng.random() < 0.5:
        return digits_task(rng.randint(0, 10 ** rng.randint(1, 4) - 1))
    length = rng.randint(2, 4)
    return count_task(rng.randint(0, 10 - length), length)


def paint_out(image: torch.Tensor, colour: str, keep: str) -> torch.Tensor:
    """``image`` [3, H, W] in [-1, 1] with the pixels nearer ``colour`` than the background and ``keep`` turned
    to the background (white)."""
    palette = torch.tensor([(255, 255, 255), COLOURS[colour], COLOURS[keep]], dtype=image.dtype) / 127.5 - 1
    nearest = torch.cdist(image.flatten(1).T, palette).argmin(-1).view(image.shape[1:])
    return torch.where(nearest == 1, torch.ones_like(image), image)


class InterleavedExamples:
    """Conversations for the interleaved tasks over ``data``'s images (see the module docstring)."""

    def __init__(self, data: ImageTextData, templates: CaptionTemplates | None = None) -> None:
        self.data, self.templates = data, templates
        self.askable = [i for i, y in enumerate(data.labels.tolist()) if y >= 0]  # images a template question fits
        if data.caption_kind == "digit" and data.captions is None:
            labels = data.labels.tolist()
            self.by_digit = {d: [i for i, y in enumerate(labels) if y == d] for d in range(10)}
            missing = [d for d, items in self.by_digit.items() if not items]
            if missing:
                raise ValueError(
                    f"interleaved digit tasks need images of every digit; {data.name!r} has none of {missing}"
                )
            self.kind = "digits"
            return
        self.scenes = []  # (dataset index, the task the scene answers)
        for i, caption in enumerate(data.captions or []):
            try:
                objects, relation = parse_caption(caption)
            except ValueError:
                continue
            if relation is not None and objects[0][0] != objects[1][0]:
                self.scenes.append((i, shapes_task(objects[1], objects[0], relation)))
        if not self.scenes or data.images.shape[-3] != 3:
            raise ValueError(
                f"interleaved examples need a digit dataset (caption_kind 'digit') or the shapes dataset (RGB, "
                f"two-object captions); {data.name!r} is neither"
            )
        self.kind = "shapes"

    def example(self, rng: random.Random) -> tuple[Turn, ...]:
        """One conversation: the user's task, then the model's answer; with templates, a third of the time a
        follow-up about an image it drew, a third of the time a question about a dataset image first."""
        turns, drawn = self._task(rng)
        if self.templates is None:
            return turns
        order = rng.random()
        if order < 1 / 3 or (order < 2 / 3 and not drawn) or (order >= 2 / 3 and not self.askable):
            return turns
        if order < 2 / 3:  # request, then a question about one of the images drawn
            image, label = rng.choice(drawn)
            return (*turns, *self._question(image, label, rng))
        i = rng.choice(self.askable)  # a question about an attached image, then the request
        return (*self._question(self.data.images[i], int(self.data.labels[i]), rng), *turns)

    def _question(self, image: torch.Tensor, label: int, rng: random.Random) -> tuple[Turn, Turn]:
        """The user attaches ``image`` (of class ``label``) and asks a template question; the model answers."""
        question, answer = self.templates.vqa(label, rng)
        return Turn("user", (image, question)), Turn("assistant", (answer,))

    def _task(self, rng: random.Random) -> tuple[tuple[Turn, Turn], list[tuple[torch.Tensor, int]]]:
        """A task and its answer, and the answer's images that have a class label (image, label)."""
        if self.kind == "digits":
            task = digit_task(rng)
            parts: list[str | torch.Tensor] = []
            for digit in task.slots:
                parts += [NUMBER_WORDS[digit], self.data.images[rng.choice(self.by_digit[digit])]]
            drawn = list(zip(parts[1::2], task.slots, strict=True))
            return (Turn("user", (task.prompt,)), Turn("assistant", tuple(parts))), drawn
        i, task = rng.choice(self.scenes)
        scene = self.data.images[i]
        (second, first), _ = parse_caption(self.data.captions[i])
        alone = paint_out(scene, second[0], first[0])
        names = self.templates.class_names if self.templates is not None else []
        drawn = [(alone, names.index(" ".join(first)))] if " ".join(first) in names else []
        return (Turn("user", (task.prompt,)), Turn("assistant", (task.slots[0], alone, task.slots[1], scene))), drawn

    def turns(self, i: int, rng: random.Random) -> tuple[Turn, ...]:
        """The stream's draw (``StoredConversations.turns``'s signature): a conversation of ``example``, whatever
        the item ``i``."""
        return self.example(rng)

    def tasks(self) -> list[InterleavedTask]:
        """A fixed set of the tasks this data makes (every shapes scene's; 200 digit and count tasks)."""
        if self.kind == "digits":
            return [t for t in make_tasks(300) if t.kind != "shapes"]
        return [t for _, t in self.scenes]

    def longest(self, layout: Layout, tok: TextTokenizer) -> int:
        """The positions of the longest conversation among ``tasks()`` and the answers that ``example`` gives them."""

        def answer(task: InterleavedTask) -> tuple[str, ...]:
            return tuple(NUMBER_WORDS[s] for s in task.slots) if self.kind == "digits" else task.slots

        return max(
            packed_length(
                training_conversation_spans(
                    [Turn("user", (t.prompt,)), Turn("assistant", tuple(p for w in answer(t) for p in (w, None)))],
                    layout,
                    tok,
                )
            )
            for t in self.tasks()
        ) + self.follow_up_length(layout, tok)

    def follow_up_length(self, layout: Layout, tok: TextTokenizer) -> int:
        """The positions the longest follow-up (or leading) question and answer add (0 without templates), with the
        clean copy of the reply's last image they may call for (``layout.clean_context``)."""
        if self.templates is None:
            return 0
        copy = math.prod(layout.gen_grid) if layout.clean_context else 0
        return copy + max(
            packed_length(
                turn_spans(Turn("user", (torch.zeros(0), q)), layout, tok)  # an image: only its grid counts
                + turn_spans(Turn("assistant", (a,)), layout, tok)
            )
            for q, a in self.templates.all_vqa()
        )

    def texts(self) -> list[str]:
        """What the text tokenizer must know: every prompt shape and every answer word these tasks use."""
        tasks = self.tasks()
        if self.kind == "digits":
            return [t.prompt for t in tasks] + list(NUMBER_WORDS)
        return [t.prompt for t in tasks] + [str(s) for t in tasks for s in t.slots]
