"""A sequence that grows: a conversation or an interleaved document continued by the model, text and images.

``Continuation`` holds the spans so far. ``append`` adds spans the model reads (a user's turn, its attached
images) or that are finished (an image the writer made); ``reply`` continues with the model's own turn: text
decoded token by token, and where the text decoder picks ``<boi>`` the writer generates an image in place (its
sampler sees every earlier span, images of earlier turns included); text resumes after its ``<eoi>``, until
``<eos>`` or a limit.

With a KV cache (``use_cache``) every appended piece runs through the backbone once, after the cached
prefix: a conversation is never re-read between turns. ``use_cache=False`` re-runs the whole sequence at every
step with the same positions and mask: the reference the cached path equals. The image's own sampler re-reads
the prefix (diffusion, masked and MAR writers re-run it at every denoising step; autoregressive codes decode
after it with a cache of their own); the finished image then enters the conversation's cache once.

Only left-to-right text continues a sequence: masked text (``text.full_attention``) fills a fixed-length
answer in parallel and every position sees every other, so it has no ``<boi>`` to hand over at and no prefix to
cache (``NotImplementedError``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from unimm.samplers.text import select_next
from unimm.sequence import ImageSpan, TextSpan, packed_length
from unimm.tasks import ImagePrompt, Spans, assistant_image, link_generated

if TYPE_CHECKING:
    from unimm.models.unified import UnifiedModel

Stop = Literal["eos", "max_new_tokens", "max_images", "max_seq_len"]


@dataclass
class Reply:
    """What the model produced in one turn: text pieces and images [C, H, W] in [-1, 1], in order, and why it
    stopped (``eos``: it closed its turn; otherwise the limit it reached, the turn then closed for it)."""

    parts: list[str | torch.Tensor] = field(default_factory=list)
    stop: Stop = "eos"

    @property
    def text(self) -> str:
        return " ".join(p for p in self.parts if isinstance(p, str))

    @property
    def images(self) -> list[torch.Tensor]:
        return [p for p in self.parts if isinstance(p, torch.Tensor)]


@dataclass
class DecodeSettings:
    """How ``reply`` samples: text (``temperature`` 0 = greedy, top-k / top-p) and images (the writer's sampler,
    guidance scale and steps; None: ``cfg.sample``'s)."""

    max_new_tokens: int = 64
    max_images: int = 4
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    cfg_scale: float | None = None
    steps: int | None = None
    sampler: str | None = None


class Continuation:
    def __init__(self, model: UnifiedModel, use_cache: bool = True) -> None:
        if model.text.full_attention:
            raise NotImplementedError(
                f"text kind {model.cfg.text.kind!r} decodes a fixed-length answer in parallel, every position seeing "
                "every other: it cannot continue a sequence left to right (no <boi> to hand over to the writer at, "
                "no prefix to cache)"
            )
        self.model, self.ctx = model, model.ctx
        self.limit = model.cfg.model.max_seq_len
        self.spans: Spans = []
        self.length = 0  # positions so far
        self.position = 0  # the next RoPE position
        self.cache = model.backbone.new_cache(self.limit) if use_cache else None
        self.last: torch.Tensor | None = None  # [1, dim] hidden state of the last position
        self.inputs: torch.Tensor | None = None  # [1, length, dim] every input so far, before links (source_link only)

    def room(self, spans: Spans) -> bool:
        return self.length + packed_length(spans) <= self.limit

    @torch.no_grad()
    def append(self, spans: Spans) -> None:
        """Add ``spans`` after the sequence so far (text and images read, finished generated images); ``ValueError``
        past ``model.max_seq_len``."""
        need = self.length + packed_length(spans)
        if need > self.limit:
            raise ValueError(f"the conversation needs {need} positions, more than model.max_seq_len = {self.limit}")
        self.spans += spans
        self.length = need
        if self.cache is None:  # the reference: the whole sequence again
            batch = self.ctx.pack([link_generated(self.spans, self.model.layout)]).to(self.ctx.device)
            hidden, _ = self.ctx.run(self.ctx.embed_inputs(batch), batch)
            self.position = int(batch.next_position[0])
        else:
            batch = self.ctx.pack([spans]).to(self.ctx.device)
            batch.positions += self.position  # the piece continues the sequence's positions
            seen = torch.ones(1, batch.tokens.shape[1], self.cache.length, dtype=torch.bool, device=self.ctx.device)
            mask = torch.cat([seen, batch.attn_mask], -1)  # every earlier position, and the piece's own mask
            x = self.linked(spans, self.ctx.embed_inputs(batch))
            hidden, _ = self.model.backbone(x, batch.positions, self.ctx.branch_ids(batch), mask, self.cache)
            self.position += int(batch.next_position[0])
        self.last = hidden[:, -1]

    def linked(self, piece: Spans, x: torch.Tensor) -> torch.Tensor:
        """The inputs x [1, n, dim] of the ``piece`` just added to ``spans`` with the links its generated images get
        (``model.source_link``, ``tasks.link_generated``): as ``ctx.run`` adds them over the whole sequence, their
        sources may sit in earlier pieces (whose inputs are kept for this)."""
        if self.ctx.link is None:
            return x
        self.inputs = x if self.inputs is None else torch.cat([self.inputs, x], 1)
        if not any(isinstance(sp, ImageSpan) and sp.generate for sp in piece):
            return x
        link = self.ctx.pack([link_generated(self.spans, self.model.layout)]).link[:, -x.shape[1] :].to(x.device)
        return self.ctx.add_links(x, link, self.inputs)

    @torch.no_grad()
    def reply(self, settings: DecodeSettings | None = None, generator: torch.Generator | None = None) -> Reply:
        """The model's turn after the spans so far, closed by ``<eos>`` (appended for it when a limit stops it)."""
        s = settings or DecodeSettings()
        if self.last is None:
            raise ValueError("nothing to continue: append a prompt first")
        tok, out = self.model.tokenizer, Reply()
        ids: list[int] = []
        new_tokens = 0

        def flush() -> None:
            if ids:
                out.parts.append(tok.decode(ids))
                ids.clear()

        while True:
            if new_tokens >= s.max_new_tokens:
                out.stop = "max_new_tokens"
                break
            last_slot = not self.room([TextSpan([tok.eos_id, tok.eos_id])])  # no room for a token and <eos>
            if last_slot and not self.room([TextSpan([tok.eos_id])]):
                out.stop = "max_seq_len"
                break
            nxt = int(select_next(self.ctx.text_logits(self.last), s.temperature, s.top_k, s.top_p, generator)[0])
            new_tokens += 1
            if last_slot and nxt != tok.eos_id:  # the one position left is the closing <eos>'s
                out.stop = "max_seq_len"
                break
            if nxt == tok.eos_id:
                flush()
                self.append([TextSpan([nxt])])
                return out
            if nxt != tok.boi_id:
                ids.append(nxt)
                self.append([TextSpan([nxt])])
                continue
            flush()
            image_span = assistant_image(None, self.model.layout)
            if len(out.images) >= s.max_images:
                out.stop = "max_images"
                break
            if not self.room([image_span, TextSpan([tok.eos_id])]):
                out.stop = "max_seq_len"
                break
            image = self.image(s, generator)
            out.parts.append(image)
            self.append([assistant_image(image, self.model.layout)])
        flush()
        self.append([TextSpan([tok.eos_id])])
        return out

    def image(self, s: DecodeSettings, generator: torch.Generator | None) -> torch.Tensor:
        """The writer's image [C, H, W] after the spans so far (its ``<boi>`` is the next position)."""
        prompt = ImagePrompt("the conversation so far", context=tuple(self.spans))
        return self.model.generate(prompt, s.cfg_scale, s.steps, s.sampler, generator)[0]
