"""What a part may use of the model it sits in: the ``ModelContext``.

Writers, readers and text objectives never see the ``UnifiedModel``. They get this small object:
the backbone (run it on embeddings, its token embedding and head; its blocks route by the ``[layers]``
part's branch ids), the text tokenizer, the task layout, the sampling settings (read when sampling runs,
so a change after ``from_pretrained`` takes effect) and the two other parts a part may ask for (the
writer embeds what a ``shared`` reader reads; a text objective reads images through the reader).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from unimm.nn.backbone import Backbone
from unimm.nn.decoding import IncrementalDecoder
from unimm.sequence import Batch, SpecialIds, collate, pack, packed_length
from unimm.tasks import ImagePrompt, Layout, Spans, as_prompt, quote_prompt
from unimm.tokenizers.text import TextTokenizer

if TYPE_CHECKING:
    from unimm.config import Config, SampleSection
    from unimm.models.contracts import Reader, TextObjective, Writer
    from unimm.nn.layers import Layers


@dataclass(eq=False)
class ModelContext:
    backbone: Backbone
    layers: Layers  # the block kind; its ``branch_ids`` are what the blocks route by
    tokenizer: TextTokenizer
    layout: Layout
    special: SpecialIds
    text_vocab: int  # text token ids are [0, text_vocab)
    config: Config
    writer: Writer
    reader: Reader
    text: TextObjective
    link: nn.Module | None = None  # ``model.source_link``: dim -> dim, what a linked position adds of its source
    grounding: nn.Module | None = None  # ``model.edit_grounding``: dim -> 1, the logit that an edit changes a cell

    @property
    def sample(self) -> SampleSection:
        """The sampling settings as they are now."""
        return self.config.sample

    @property
    def device(self) -> torch.device:
        return self.backbone.embed_tokens.weight.device

    def pack(self, spans: list[list], left_pad: bool = False) -> Batch:
        seqs = [pack(s, self.special) for s in spans]
        return collate(seqs, self.special.pad, self.text.full_attention, left_pad)

    def check_length(self, length: int, what: str) -> None:
        limit = self.config.model.max_seq_len
        if length > limit:
            raise ValueError(f"{what} needs {length} positions, more than model.max_seq_len = {limit}")

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the text vocabulary only (image codes and [MASK] are never text)."""
        return F.linear(hidden, self.backbone.lm_head.weight[: self.text_vocab])

    def branch_ids(self, batch: Batch) -> torch.Tensor:
        """The ids [B, L] the blocks of ``batch``'s backbone pass route by (``layers.route``; else the modality). A
        clean copy of a generated image routes as that image does when sampling gives it finished: as generated."""
        return self.layers.branch_ids(batch.modality, batch.generated() | batch.copies())

    def linked(self, x: torch.Tensor, batch: Batch) -> torch.Tensor:
        """x [B, L, dim] with ``link(x[source])`` added at each position ``batch.link`` links to a source (an edit's
        target cells, ``model.source_link``); x itself without a link. The link runs (on no rows) even when nothing
        is linked, so that every process of a distributed step uses its weights."""
        return x if self.link is None else self.add_links(x, batch.link, x)

    def add_links(self, x: torch.Tensor, link: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """x [B, n, dim] plus ``link(sources[b, link[b, i]])`` at each position with ``link[b, i] >= 0``; ``sources``
        [B, m, dim] are the inputs the link positions index (x itself, or a longer sequence x ends)."""
        at = (link >= 0).nonzero(as_tuple=True)
        return x.index_put(at, self.link(sources[at[0], link[at]]), accumulate=True)

    def run(self, x: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The backbone over embeddings x [B, L, dim] laid out as ``batch`` (``linked`` first) -> (hidden [B, L, dim],
        aux losses)."""
        return self.backbone(self.linked(x, batch), batch.positions, self.branch_ids(batch), batch.attn_mask)

    @torch.no_grad()
    def source_changes(self, prompts: Sequence[str | ImagePrompt]) -> torch.Tensor:
        """[B, cells]: the grounding head's probability (``model.edit_grounding``) that each edit of ``prompts``
        changes each cell of its source, from one backbone pass over the edit's layout up to its source read (the
        target left empty). Every prompt must be an edit (``ImagePrompt`` with a source, no conversation)."""
        if self.grounding is None:
            raise ValueError("this model has no grounding head (trained with model.edit_grounding = 0)")
        prompts = [as_prompt(p) for p in prompts]
        if any(p.source is None or p.context for p in prompts):
            raise ValueError("the cells an edit changes are predicted for edits only (an ImagePrompt with a source)")
        batch, x = self.generation_batch(prompts, guided=False)
        hidden, _ = self.run(x, batch)
        read = (batch.image_id >= 0) & ~batch.generated()
        return torch.sigmoid(self.grounding(hidden[read]).squeeze(-1).float()).view(len(prompts), -1)

    def decoder(self, x: torch.Tensor, batch: Batch, max_new: int, use_cache: bool = True) -> IncrementalDecoder:
        """Incremental decoding after the left-padded prompt ``batch`` (embeddings x [B, L, dim]), routed as
        ``run`` routes. Its steps append text or generated image codes, which every route sends by modality."""
        ids = self.branch_ids(batch)
        return IncrementalDecoder(
            self.backbone, self.linked(x, batch), batch.positions, ids, batch.attn_mask, batch.valid, max_new, use_cache
        )

    def run_with_images(self, base: torch.Tensor, batch: Batch, images: torch.Tensor) -> torch.Tensor:
        """Scatter image embeddings [N, n, dim] into the positions of the images ``batch`` leaves to fill in ``base``
        [B, L, dim] (in order; images read, or made earlier, are already in ``base``), run the backbone -> hidden
        states [N, n, dim] at those positions."""
        at = batch.to_fill()
        hidden, _ = self.run(base.masked_scatter(at.unsqueeze(-1), images.to(base.dtype)), batch)
        return hidden[at].view(*images.shape[:2], -1)

    def read_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images the model reads [N, C, H, W] -> input embeddings [N, n, dim], through the reader."""
        return self.reader.read(self, images)

    def embed_inputs(self, batch: Batch) -> torch.Tensor:
        """Token embeddings with the images of ``batch`` in their positions: those read through the reader, generated
        ones that are given (made earlier in a conversation) as the writer sees a finished image
        (``Writer.context_inputs``). The positions of an image left to fill keep their token embeddings."""
        x = self.backbone.embed_tokens(batch.tokens)
        gen = batch.generated()
        read = (batch.image_id >= 0) & ~gen
        if read.any():
            emb = self.read_images(batch.images[~batch.image_generate].to(x.device))
            x = x.masked_scatter(read.unsqueeze(-1), emb.to(x.dtype))
        made = gen & ~batch.to_fill()
        if made.any():
            emb = self.writer.context_inputs(self, batch.images[batch.image_generate & batch.image_given].to(x.device))
            x = x.masked_scatter(made.unsqueeze(-1), emb.to(x.dtype))
        return x

    def generation_spans(self, prompts: Sequence[str | ImagePrompt], guided: bool) -> list[Spans]:
        """The layouts of ``prompts`` (captions, or ``ImagePrompt``s: a caption or an edit) with the image to
        generate left empty, then their unconditional twins when ``guided``; each checked against
        ``model.max_seq_len``."""
        prompts = [as_prompt(p) for p in prompts]
        seqs = [p.spans(self.layout, self.tokenizer) for p in prompts]
        for p, spans in zip(prompts, seqs, strict=True):
            self.check_length(packed_length(spans), f"prompt {quote_prompt(p.text)}")
        if guided:
            seqs += [p.spans(self.layout, self.tokenizer, conditional=False) for p in prompts]
        return seqs

    def generation_batch(self, prompts: Sequence[str | ImagePrompt], guided: bool) -> tuple[Batch, torch.Tensor]:
        """The packed ``generation_spans`` and their input embeddings [B or 2B, L, dim] (``embed_inputs``: the images
        read, an edit's source or a conversation's, and the images made earlier in a conversation in their
        positions)."""
        batch = self.pack(self.generation_spans(prompts, guided)).to(self.device)
        return batch, self.embed_inputs(batch)
