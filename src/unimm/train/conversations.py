"""The dataset's own conversations as training examples (``data.interleaved_fraction`` on a dataset converted from
LLaVA conversations or interleaved documents, ``data/conversations.py``): item ``i``'s turns as ``Turn``s, laid
out by ``tasks.conversation_spans`` (loss on the assistant's text and images, the user's read)."""

from __future__ import annotations

import random

from unimm.data import CaptionTemplates, ImageTextData
from unimm.data.conversations import Conversation, conversation_texts
from unimm.sequence import packed_length
from unimm.tasks import Layout, Turn, training_conversation_spans
from unimm.tokenizers.text import TextTokenizer
from unimm.train.interleaved import InterleavedExamples


def as_turns(conversation: Conversation) -> tuple[Turn, ...]:
    """A stored conversation's turns as ``Turn``s."""
    return tuple(Turn(role, parts) for role, parts in conversation)  # type: ignore[arg-type]


class StoredConversations:
    """Item ``i``'s stored conversation (``data.conversations[i]``), for the items that have one."""

    def __init__(self, data: ImageTextData) -> None:
        if data.conversations is None:
            raise ValueError(f"dataset {data.name!r} stores no conversations or documents")
        self.conversations = data.conversations

    def example(self, i: int) -> tuple[Turn, ...] | None:
        """Item ``i``'s turns; None when it has none (a plain captioned image)."""
        conversation = self.conversations[i]
        return None if conversation is None else as_turns(conversation)

    def turns(self, i: int, rng: random.Random) -> tuple[Turn, ...] | None:
        """The stream's draw for item ``i`` (``InterleavedExamples.turns``'s signature): its own turns."""
        return self.example(i)

    def _stored(self) -> list[Conversation]:
        return [c for c in self.conversations if c is not None]

    def texts(self) -> list[str]:
        """Every text piece of every turn (what the text tokenizer must know)."""
        return [t for c in self._stored() for t in conversation_texts(c)]

    def answers(self) -> list[str]:
        """The text closing each assistant turn (what a fixed answer length must hold)."""
        closing = [parts[-1] for c in self._stored() for role, parts in c if role == "assistant" and parts]
        return [t for t in closing if isinstance(t, str)]

    def longest(self, layout: Layout, tok: TextTokenizer) -> int:
        """The positions of the longest stored conversation."""
        return max(packed_length(training_conversation_spans(as_turns(c), layout, tok)) for c in self._stored())


def conversation_source(
    data: ImageTextData, templates: CaptionTemplates | None
) -> StoredConversations | InterleavedExamples:
    """Where ``data.interleaved_fraction``'s conversations come from: the dataset's own when it stores some, else
    those made from its images (``train/interleaved.py``: digits or shapes)."""
    return StoredConversations(data) if data.conversations is not None else InterleavedExamples(data, templates)
