"""Multi-turn chat with a unified model, images in and out: ``ChatSession(model).send(text, images)``.

The conversation is one sequence in the layout it trains on (``tasks.conversation_spans``: a user turn closed by
``<sep>``, the model's by ``<eos>``) and stays in the KV cache across turns: each turn runs through the backbone
once, after the cached history (``models/continuation.py``). The model answers with text and, where its text
decoder picks ``<boi>``, images generated in place that see the whole conversation, the images of earlier turns
included. That needs left-to-right text: a model with masked text (``text.kind = "masked"``, UniDisc) decodes a
fixed-length answer in parallel with full attention, so it would re-encode the whole conversation every turn
and cannot choose where an image goes; ``ChatSession`` refuses it (``NotImplementedError``) rather than
pretend.

Bad input (an over-long message, too many images, an image of the wrong shape or range) is a ``ValueError``
raised before anything is appended: the session goes on as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from unimm.models.continuation import Continuation, DecodeSettings, Reply
from unimm.sequence import TextSpan
from unimm.tasks import Turn, turn_spans

if TYPE_CHECKING:
    from unimm.models.unified import UnifiedModel

MAX_MESSAGE_CHARS = 1000
MAX_IMAGES_PER_MESSAGE = 4


class ChatSession:
    def __init__(
        self,
        model: UnifiedModel,
        settings: DecodeSettings | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> None:
        """``settings``: how replies are sampled and bounded (``DecodeSettings``); ``generator``: every draw of
        every turn (None: seed 0, so a session replays)."""
        self.model = model.eval()
        self.settings = settings or DecodeSettings()
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.state = Continuation(model, use_cache)
        self.state.append([TextSpan([model.tokenizer.bos_id], loss=False)])
        self.turns: list[Turn] = []

    @property
    def positions_left(self) -> int:
        """How many positions the conversation may still grow by (``model.max_seq_len`` minus those used)."""
        return self.state.limit - self.state.length

    def send(self, text: str, images: Sequence[torch.Tensor] = ()) -> Reply:
        """One user turn: ``images`` (each [C, H, W] in [-1, 1], attached before the text) and ``text`` -> the model's
        reply (text pieces and images [C, H, W] in [-1, 1])."""
        if not isinstance(text, str):
            raise ValueError(f"a message is a str, got {type(text).__name__}")
        if len(text) > MAX_MESSAGE_CHARS:
            raise ValueError(f"the message has {len(text):,} characters, more than {MAX_MESSAGE_CHARS:,}")
        if len(images) > MAX_IMAGES_PER_MESSAGE:
            raise ValueError(f"{len(images)} images attached, more than {MAX_IMAGES_PER_MESSAGE} per message")
        images = [self.model._images_to_read(im[None], "chat")[0] for im in images]
        turn = Turn("user", (*images, text))
        spans = turn_spans(turn, self.model.layout, self.model.tokenizer)
        # the turn must leave room for the reply to say something and close it
        if not self.state.room([*spans, TextSpan([0, 0])]):
            raise ValueError(
                f"the message needs more positions than the {self.positions_left} left in this conversation "
                f"(model.max_seq_len = {self.state.limit}): start a new one"
            )
        self.state.append(spans)
        reply = self.state.reply(self.settings, self.generator)
        self.turns += [turn, Turn("assistant", tuple(reply.parts))]
        return reply
