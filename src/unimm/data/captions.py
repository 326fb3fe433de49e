"""Caption and VQA templates for labelled datasets, and parsing a label back out of generated text."""

from __future__ import annotations

import random
import re

KINDS = ("digit", "generic")

_DIGIT_CAPTIONS = (
    "a handwritten {name}",
    "the digit {digit}",
    "a picture of the number {name}",
    "an image of {article} {name}",
    "handwritten digit {name}",
    "the number {digit}",
    "{article} {name}, written by hand",
)
_DIGIT_QUESTIONS = (
    ("what digit is this?", "{name}"),
    ("which number is shown?", "{name}"),
    ("what number is written here?", "{name}"),
    ("which digit is in the image?", "{digit}"),
)
_GENERIC_CAPTIONS = (
    "{article} {name}",
    "an image of {article} {name}",
    "a picture of {article} {name}",
    "a drawing of {article} {name}",
    "{name}",
)
_GENERIC_QUESTIONS = (
    ("what is this?", "{name}"),
    ("what is shown in the image?", "{name}"),
    ("what do you see?", "{name}"),
    ("what is in the picture?", "{article} {name}"),
)


def article(word: str) -> str:
    """``a`` or ``an`` for the word that follows, by how it starts (good enough for class names)."""
    word = word.strip()
    if word.startswith(("one", "uni", "use", "eu")):
        return "a"
    return "an" if word[:1] and word[:1] in "aeiou8" else "a"


class CaptionTemplates:
    """Template captions and question/answer pairs for ``class_names``; ``kind`` is digit or generic.

    Digit kind also names a class by its digit character (``"the digit 7"``), so class ``i`` must be
    the digit ``i``.
    """

    def __init__(self, class_names: list[str], kind: str = "generic") -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not class_names:
            raise ValueError("class_names must not be empty")
        self.class_names = [name.lower().strip() for name in class_names]
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class_names must be distinct")
        self.kind = kind
        self.caption_templates = _DIGIT_CAPTIONS if kind == "digit" else _GENERIC_CAPTIONS
        self.question_templates = _DIGIT_QUESTIONS if kind == "digit" else _GENERIC_QUESTIONS
        self._aliases = self._build_aliases()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _fill(self, template: str, label: int) -> str:
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} out of range 0..{self.num_classes - 1}")
        name = self.class_names[label]
        return template.format(name=name, digit=str(label), article=article(name))

    def caption(self, label: int, rng: random.Random) -> str:
        """A caption for ``label``, with the template drawn by ``rng``."""
        return self._fill(rng.choice(self.caption_templates), label)

    def vqa(self, label: int, rng: random.Random) -> tuple[str, str]:
        """A (question, answer) pair about an image of class ``label``."""
        question, answer = rng.choice(self.question_templates)
        return question, self._fill(answer, label)

    def all_captions(self, label: int) -> list[str]:
        """Every caption the templates can produce for ``label``."""
        return [self._fill(template, label) for template in self.caption_templates]

    def all_vqa(self) -> list[tuple[str, str]]:
        """Every (question, answer) pair the templates can produce."""
        return [(q, self._fill(a, label)) for label in range(self.num_classes) for q, a in self.question_templates]

    def all_texts(self) -> list[str]:
        """Every caption, question and answer string the templates can produce (BPE training text)."""
        texts: list[str] = [question for question, _ in self.question_templates]
        for label in range(self.num_classes):
            texts += self.all_captions(label)
            texts += [self._fill(answer, label) for _, answer in self.question_templates]
        return list(dict.fromkeys(texts))  # drop repeats, keep order

    def _build_aliases(self) -> list[tuple[re.Pattern[str], int, str]]:
        aliases = [(name, label) for label, name in enumerate(self.class_names)]
        if self.kind == "digit":
            aliases += [(str(label), label) for label in range(self.num_classes)]
        return [(re.compile(rf"(?<![\w]){re.escape(alias)}(?![\w])"), label, alias) for alias, label in aliases]

    def parse(self, text: str) -> int:
        """The label named in ``text`` (class name or, for digits, the digit character).

        Returns -1 if no class is named or several different classes are. A name that only occurs
        inside a longer matched name (``cat`` inside ``wild cat``) does not count.
        """
        text = text.lower()
        spans: list[tuple[int, int, int]] = []
        for pattern, label, _ in self._aliases:
            spans += [(m.start(), m.end(), label) for m in pattern.finditer(text)]
        kept = {
            label
            for start, end, label in spans
            if not any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in spans)
        }
        return kept.pop() if len(kept) == 1 else -1
